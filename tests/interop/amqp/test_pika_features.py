"""Queue features through pika: confirms, returns, priorities, TTL and dead letters, limits,
single active consumer, delivery limits, transactions, get, nack/reject and the error codes."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import amqp_wire as wire
import pika
import pytest
from amqp_inprocess import InProcessBroker
from pamqp import commands
from pika.exceptions import ChannelClosedByBroker, UnroutableError

pytestmark = pytest.mark.interop

Connect = Callable[..., pika.BlockingConnection]


@pytest.fixture
def connect(amqp_broker: InProcessBroker) -> Iterator[Connect]:
    opened: list[pika.BlockingConnection] = []

    def make(**kw: object) -> pika.BlockingConnection:
        params = pika.ConnectionParameters("127.0.0.1", amqp_broker.port, **kw)
        conn = pika.BlockingConnection(params)
        opened.append(conn)
        return conn

    yield make
    for conn in opened:
        if conn.is_open:
            conn.close()


def pump(conn: pika.BlockingConnection, done: Callable[[], bool], timeout: float = 10.0) -> None:
    """Process I/O until ``done()`` holds (pika returns from each call after any event)."""
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        conn.process_data_events(time_limit=0.05)
    assert done()


def get_body(channel, queue: str) -> bytes | None:
    method, _props, body = channel.basic_get(queue, auto_ack=True)
    return None if method is None else body


def test_publisher_confirms_and_mandatory_return(connect: Connect) -> None:
    channel = connect().channel()
    channel.confirm_delivery()
    channel.queue_declare("confirmed", durable=True)
    for i in range(20):
        channel.basic_publish(
            "", "confirmed", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2)
        )  # raises if nacked
    assert channel.queue_declare("confirmed", passive=True).method.message_count == 20
    with pytest.raises(UnroutableError) as info:
        channel.basic_publish("", "no-such-queue", b"lost", mandatory=True)
    assert info.value.messages[0].method.reply_code == 312


def test_basic_get_empty_then_message(connect: Connect) -> None:
    channel = connect().channel()
    channel.queue_declare("getq")
    assert channel.basic_get("getq") == (None, None, None)
    channel.basic_publish("", "getq", b"one")
    method, _props, body = channel.basic_get("getq")
    assert body == b"one" and method.message_count == 0 and not method.redelivered
    channel.basic_nack(method.delivery_tag, requeue=True)
    method, _props, body = channel.basic_get("getq")
    assert body == b"one" and method.redelivered
    channel.basic_reject(method.delivery_tag, requeue=False)
    assert channel.basic_get("getq") == (None, None, None)


def test_properties_pass_through_byte_exact(connect: Connect) -> None:
    channel = connect().channel()
    channel.queue_declare("props")
    sent = pika.BasicProperties(
        content_type="application/json",
        content_encoding="utf-8",
        headers={"a": 1, "b": "two", "c": [1, "x"], "d": {"nested": True}},
        delivery_mode=2,
        priority=4,
        correlation_id="corr",
        reply_to="back",
        expiration="60000",
        message_id="mid",
        timestamp=1700000000,
        type="t",
        user_id="guest",
        app_id="app",
    )
    body = bytes(range(256)) * 1000  # 256 000 bytes: split over several body frames
    channel.basic_publish("", "props", body, sent)
    method, props, got = channel.basic_get("props", auto_ack=True)
    assert got == body
    for field in (
        "content_type", "content_encoding", "headers", "delivery_mode", "priority",
        "correlation_id", "reply_to", "expiration", "message_id", "timestamp", "type",
        "user_id", "app_id",
    ):
        assert getattr(props, field) == getattr(sent, field), field


def test_priorities(connect: Connect) -> None:
    channel = connect().channel()
    channel.queue_declare("prio", arguments={"x-max-priority": 10})
    for priority in (1, 5, 9, 5, 0):
        channel.basic_publish(
            "", "prio", f"p{priority}".encode(), pika.BasicProperties(priority=priority)
        )
    bodies = [get_body(channel, "prio") for _ in range(5)]
    assert bodies == [b"p9", b"p5", b"p5", b"p1", b"p0"]


def test_ttl_and_dead_letter_with_x_death(connect: Connect) -> None:
    channel = connect().channel()
    channel.exchange_declare("dlx", "fanout")
    channel.queue_declare("dead")
    channel.queue_bind("dead", "dlx")
    channel.queue_declare(
        "short-lived", arguments={"x-message-ttl": 50, "x-dead-letter-exchange": "dlx"}
    )
    channel.basic_publish("", "short-lived", b"expire me")
    channel.queue_declare("rejecting", arguments={"x-dead-letter-exchange": "dlx"})
    channel.basic_publish("", "rejecting", b"reject me")
    method, _, _ = channel.basic_get("rejecting")
    channel.basic_reject(method.delivery_tag, requeue=False)
    seen: dict[bytes, dict] = {}
    for _ in range(200):
        method, props, body = channel.basic_get("dead", auto_ack=True)
        if method is not None:
            seen[body] = props.headers
        if len(seen) == 2:
            break
        channel.connection.sleep(0.05)
    assert set(seen) == {b"expire me", b"reject me"}
    death = seen[b"expire me"]["x-death"][0]
    assert death["queue"] == "short-lived" and death["reason"] == "expired"
    assert death["count"] == 1
    death = seen[b"reject me"]["x-death"][0]
    assert death["queue"] == "rejecting" and death["reason"] == "rejected"
    assert seen[b"reject me"]["x-first-death-reason"] == "rejected"


def test_max_length_drop_head(connect: Connect) -> None:
    channel = connect().channel()
    channel.queue_declare("bounded", arguments={"x-max-length": 2})
    for i in range(5):
        channel.basic_publish("", "bounded", f"m{i}".encode())
    assert [get_body(channel, "bounded") for _ in range(3)] == [b"m3", b"m4", None]


def test_max_length_reject_publish_nacks(connect: Connect) -> None:
    channel = connect().channel()
    channel.confirm_delivery()
    channel.queue_declare(
        "full", arguments={"x-max-length": 1, "x-overflow": "reject-publish"}
    )
    channel.basic_publish("", "full", b"fits")
    with pytest.raises(pika.exceptions.NackError):
        channel.basic_publish("", "full", b"refused")
    assert get_body(channel, "full") == b"fits"


def test_single_active_consumer(connect: Connect) -> None:
    channel = connect().channel()
    channel.queue_declare("sac", arguments={"x-single-active-consumer": True})
    got: dict[str, list[bytes]] = {"a": [], "b": []}
    for name in ("a", "b"):
        channel.basic_consume(
            "sac",
            lambda ch, m, p, body, name=name: got[name].append(body),
            auto_ack=True,
            consumer_tag=name,
        )
    for i in range(4):
        channel.basic_publish("", "sac", f"m{i}".encode())
    pump(channel.connection, lambda: len(got["a"]) + len(got["b"]) == 4)
    assert got == {"a": [b"m0", b"m1", b"m2", b"m3"], "b": []}
    channel.basic_cancel("a")
    channel.basic_publish("", "sac", b"m4")
    pump(channel.connection, lambda: len(got["b"]) == 1)
    assert got == {"a": [b"m0", b"m1", b"m2", b"m3"], "b": [b"m4"]}


def test_single_active_consumer_hands_over_to_a_higher_priority(connect: Connect) -> None:
    channel = connect().channel()
    channel.queue_declare("sac-prio", arguments={"x-single-active-consumer": True})
    channel.basic_qos(prefetch_count=1)
    got: dict[str, list[tuple[int, bytes]]] = {"low": [], "high": []}

    def on_message(name: str) -> Callable[..., None]:
        return lambda ch, method, props, body: got[name].append((method.delivery_tag, body))

    channel.basic_consume("sac-prio", on_message("low"), consumer_tag="low")
    for i in range(4):
        channel.basic_publish("", "sac-prio", f"m{i}".encode())
    pump(channel.connection, lambda: len(got["low"]) == 1)
    # A higher-priority consumer arrives while "low" holds m0 unacknowledged: nothing more is
    # delivered until "low" acks, then "high" is the active consumer and gets the rest in order.
    channel.basic_consume(
        "sac-prio", on_message("high"), consumer_tag="high", arguments={"x-priority": 10}
    )
    channel.connection.process_data_events(time_limit=0.3)
    assert got == {"low": [(got["low"][0][0], b"m0")], "high": []}
    channel.basic_ack(got["low"][0][0])
    pump(channel.connection, lambda: len(got["high"]) == 1)
    while len(got["high"]) < 3:
        channel.basic_ack(got["high"][-1][0])
        count = len(got["high"])
        pump(channel.connection, lambda count=count: len(got["high"]) == count + 1)
    assert [body for _, body in got["low"]] == [b"m0"]
    assert [body for _, body in got["high"]] == [b"m1", b"m2", b"m3"]
    # A lower-priority newcomer does not take over.
    channel.basic_consume("sac-prio", on_message("low"), consumer_tag="low-2")
    channel.basic_ack(got["high"][-1][0])
    channel.basic_publish("", "sac-prio", b"m4")
    pump(channel.connection, lambda: len(got["high"]) == 4)
    assert got["high"][-1][1] == b"m4" and len(got["low"]) == 1


def test_delivery_limit_dead_letters(connect: Connect) -> None:
    channel = connect().channel()
    channel.queue_declare("dl-target")
    channel.queue_declare(
        "limited",
        arguments={
            "x-delivery-limit": 1,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "dl-target",
        },
    )
    channel.basic_publish("", "limited", b"poison")
    for _ in range(2):
        method, _, body = channel.basic_get("limited")
        assert body == b"poison"
        channel.basic_nack(method.delivery_tag, requeue=True)
    assert channel.basic_get("limited") == (None, None, None)
    method, props, body = channel.basic_get("dl-target", auto_ack=True)
    assert body == b"poison"
    assert props.headers["x-death"][0]["reason"] == "delivery_limit"


def test_transactions_commit_and_rollback(connect: Connect) -> None:
    channel = connect().channel()
    channel.queue_declare("txq")
    channel.tx_select()
    channel.basic_publish("", "txq", b"rolled back")
    channel.tx_rollback()
    channel.basic_publish("", "txq", b"committed")
    probe = connect().channel()
    assert probe.queue_declare("txq", passive=True).method.message_count == 0
    channel.tx_commit()
    assert get_body(probe, "txq") == b"committed"
    assert get_body(probe, "txq") is None


def test_redelivery_after_channel_close(connect: Connect) -> None:
    conn = connect()
    channel = conn.channel()
    channel.queue_declare("redeliver")
    channel.basic_publish("", "redeliver", b"x")
    method, _, _ = channel.basic_get("redeliver")
    assert not method.redelivered
    channel.close()
    method, _, body = conn.channel().basic_get("redeliver", auto_ack=True)
    assert body == b"x" and method.redelivered


def test_redelivery_after_connection_loss(connect: Connect, amqp_broker: InProcessBroker) -> None:
    channel = connect().channel()
    channel.queue_declare("lost")
    channel.basic_publish("", "lost", b"unacked")
    # A raw client takes the message without acking it, then its socket just goes away.
    sock = wire.handshake(amqp_broker.port)
    wire.send_method(sock, 1, commands.Channel.Open())
    wire.send_method(sock, 1, commands.Basic.Get(queue="lost"))
    frames = wire.read_until(sock, commands.Basic.GetOk)
    assert frames[-1].redelivered is False
    sock.close()
    for _ in range(200):
        method, _, body = channel.basic_get("lost", auto_ack=True)
        if method is not None:
            break
        channel.connection.sleep(0.05)
    assert body == b"unacked" and method.redelivered


def channel_error(action: Callable[[], object]) -> int:
    with pytest.raises(ChannelClosedByBroker) as info:
        action()
    return info.value.reply_code


def test_channel_errors_close_only_the_channel(connect: Connect) -> None:
    conn = connect()
    ch = conn.channel()
    assert channel_error(lambda: ch.queue_declare("nope", passive=True)) == 404
    ch = conn.channel()
    assert channel_error(lambda: ch.exchange_declare("nope", passive=True)) == 404
    ch = conn.channel()
    ch.queue_declare("args", arguments={"x-max-length": 5})
    assert channel_error(lambda: ch.queue_declare("args", arguments={"x-max-length": 6})) == 406
    ch = conn.channel()
    assert channel_error(lambda: ch.queue_declare("amq.mine")) == 403
    ch = conn.channel()
    assert channel_error(lambda: ch.basic_ack(99) or ch.queue_declare("after")) == 406
    ch = conn.channel()
    ch.queue_declare("excl", exclusive=True)
    other = connect().channel()
    assert channel_error(lambda: other.queue_declare("excl", passive=True)) == 405
    ch.basic_publish("missing-exchange", "k", b"x")
    with pytest.raises(ChannelClosedByBroker) as info:
        ch.queue_declare("after-publish")
    assert info.value.reply_code == 404
    assert conn.is_open
    assert conn.channel().queue_declare("still-works").method.queue == "still-works"


def test_wrong_credentials_and_unknown_vhost(amqp_broker: InProcessBroker) -> None:
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(
            pika.ConnectionParameters(
                "127.0.0.1",
                amqp_broker.port,
                credentials=pika.PlainCredentials("guest", "wrong"),
                connection_attempts=1,
            )
        )
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError) as info:
        pika.BlockingConnection(
            pika.ConnectionParameters(
                "127.0.0.1", amqp_broker.port, virtual_host="nowhere", connection_attempts=1
            )
        )
    assert "(530)" in str(info.value)


def test_headers_exchange_e2e_binding_and_alternate_exchange(connect: Connect) -> None:
    channel = connect().channel()
    channel.exchange_declare("hdr", "headers")
    channel.queue_declare("pdf-reports")
    channel.queue_bind(
        "pdf-reports", "hdr", arguments={"x-match": "all", "format": "pdf", "type": "report"}
    )
    report = pika.BasicProperties(headers={"format": "pdf", "type": "report"})
    channel.basic_publish("hdr", "", b"yes", report)
    channel.basic_publish("hdr", "", b"no", pika.BasicProperties(headers={"format": "pdf"}))
    assert [get_body(channel, "pdf-reports") for _ in range(2)] == [b"yes", None]

    channel.exchange_declare("upstream", "topic")
    channel.exchange_declare("downstream", "fanout")
    channel.exchange_bind(destination="downstream", source="upstream", routing_key="a.#")
    channel.queue_declare("from-downstream")
    channel.queue_bind("from-downstream", "downstream")
    channel.basic_publish("upstream", "a.b", b"via e2e")
    channel.basic_publish("upstream", "b.a", b"not routed")
    assert [get_body(channel, "from-downstream") for _ in range(2)] == [b"via e2e", None]

    channel.exchange_declare("unrouted", "fanout")
    channel.queue_declare("unrouted-q")
    channel.queue_bind("unrouted-q", "unrouted")
    channel.exchange_declare("main", "direct", arguments={"alternate-exchange": "unrouted"})
    channel.basic_publish("main", "nobody-binds-this", b"to the alternate")
    assert get_body(channel, "unrouted-q") == b"to the alternate"


def test_consumer_cancelled_when_its_queue_is_deleted(connect: Connect) -> None:
    consumer_channel = connect().channel()
    consumer_channel.queue_declare("doomed")
    cancelled: list[str] = []
    consumer_channel.add_on_cancel_callback(
        lambda frame: cancelled.append(frame.method.consumer_tag)
    )
    consumer_channel.basic_consume("doomed", lambda *a: None, consumer_tag="watcher")
    connect().channel().queue_delete("doomed")
    pump(consumer_channel.connection, lambda: cancelled == ["watcher"])
    assert consumer_channel.is_open


def test_qos_prefetch_limits_unacked_deliveries(connect: Connect) -> None:
    channel = connect().channel()
    channel.queue_declare("prefetched")
    for i in range(10):
        channel.basic_publish("", "prefetched", f"m{i}".encode())
    channel.basic_qos(prefetch_count=3)
    got: list[tuple[int, bytes]] = []
    channel.basic_consume("prefetched", lambda ch, m, p, body: got.append((m.delivery_tag, body)))
    pump(channel.connection, lambda: len(got) == 3)
    channel.connection.process_data_events(time_limit=0.3)
    assert len(got) == 3  # no fourth delivery until something is acked
    channel.basic_ack(got[1][0])
    pump(channel.connection, lambda: len(got) == 4)
    channel.basic_ack(0, multiple=True)
    pump(channel.connection, lambda: len(got) == 7)
    assert [body for _, body in got] == [f"m{i}".encode() for i in range(7)]


def test_publishers_blocked_while_disk_is_low(
    connect: Connect, amqp_broker: InProcessBroker
) -> None:
    config = amqp_broker.broker.config
    alarm = amqp_broker.listener.alarm
    assert alarm is not None
    publisher = connect()
    events: list[str] = []
    publisher.add_on_connection_blocked_callback(lambda c, m: events.append("blocked"))
    publisher.add_on_connection_unblocked_callback(lambda c, m: events.append("unblocked"))
    channel = publisher.channel()
    channel.queue_declare("alarmed")
    reader = connect().channel()

    def wait_alarm(reason: str | None) -> None:
        deadline = time.monotonic() + 15
        while alarm.reason != reason and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alarm.reason == reason

    limit = config.disk_free_limit_bytes
    try:
        config.disk_free_limit_bytes = 1 << 62  # more free space than any disk has
        wait_alarm("low on disk")
        channel.basic_publish("", "alarmed", b"first")  # read, then the publisher is blocked
        pump(publisher, lambda: events == ["blocked"])
        assert get_body(reader, "alarmed") == b"first"
        channel.basic_publish("", "alarmed", b"second")  # not read while blocked
        publisher.process_data_events(time_limit=0.3)
        # A connection that only consumes carries on meanwhile.
        assert reader.queue_declare("alarmed", passive=True).method.message_count == 0
    finally:
        config.disk_free_limit_bytes = limit
    wait_alarm(None)
    pump(publisher, lambda: events == ["blocked", "unblocked"], timeout=15)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if reader.queue_declare("alarmed", passive=True).method.message_count == 1:
            break
        reader.connection.sleep(0.05)
    assert [get_body(reader, "alarmed") for _ in range(2)] == [b"second", None]


def test_max_length_reject_publish_dlx_nacks_and_dead_letters(connect: Connect) -> None:
    channel = connect().channel()
    channel.confirm_delivery()
    channel.queue_declare("overflowed")
    channel.queue_declare(
        "full-dlx",
        arguments={
            "x-max-length": 1,
            "x-overflow": "reject-publish-dlx",
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "overflowed",
        },
    )
    channel.basic_publish("", "full-dlx", b"fits")
    with pytest.raises(pika.exceptions.NackError):
        channel.basic_publish("", "full-dlx", b"refused")
    assert get_body(channel, "full-dlx") == b"fits"
    method, props, body = channel.basic_get("overflowed", auto_ack=True)
    assert body == b"refused"
    assert props.headers["x-death"][0]["reason"] == "maxlen"


def test_recover_requeues_unacked_as_redelivered(connect: Connect) -> None:
    channel = connect().channel()
    channel.queue_declare("recover-q")
    channel.basic_publish("", "recover-q", b"again")
    method, _, _ = channel.basic_get("recover-q")
    assert not method.redelivered
    channel.basic_recover(requeue=True)
    method, _, body = channel.basic_get("recover-q", auto_ack=True)
    assert body == b"again" and method.redelivered


def test_purge_unbind_and_conditional_deletes(connect: Connect) -> None:
    conn = connect()
    channel = conn.channel()
    channel.exchange_declare("ex-del", "direct")
    channel.queue_declare("q-del")
    channel.queue_bind("q-del", "ex-del", "k")
    for _ in range(3):
        channel.basic_publish("ex-del", "k", b"m")
    assert channel.queue_purge("q-del").method.message_count == 3
    channel.queue_unbind("q-del", "ex-del", "k")
    channel.basic_publish("ex-del", "k", b"unrouted now")
    assert get_body(channel, "q-del") is None
    channel.basic_publish("", "q-del", b"still here")
    assert channel_error(lambda: channel.queue_delete("q-del", if_empty=True)) == 406
    channel = conn.channel()
    channel.basic_consume("q-del", lambda *a: None)
    other = conn.channel()
    assert channel_error(lambda: other.queue_delete("q-del", if_unused=True)) == 406
    other = conn.channel()
    other.queue_bind("q-del", "ex-del", "k2")
    assert channel_error(lambda: other.exchange_delete("ex-del", if_unused=True)) == 406
    other = conn.channel()
    other.exchange_delete("ex-del")
    # The consumer above holds the one message unacked: no ready messages are deleted.
    assert other.queue_delete("q-del").method.message_count == 0
    assert other.queue_delete("never-existed").method.message_count == 0
    assert channel_error(lambda: other.exchange_declare("ex-del", passive=True)) == 404


def test_raising_per_consumer_prefetch_applies_to_running_consumers(connect: Connect) -> None:
    # Celery raises its prefetch with basic.qos(global=false) while consuming (documented
    # difference from RabbitMQ, where only later consumers would see the new limit).
    channel = connect().channel()
    channel.queue_declare("raised")
    for i in range(5):
        channel.basic_publish("", "raised", f"m{i}".encode())
    channel.basic_qos(prefetch_count=1)
    got: list[bytes] = []
    channel.basic_consume("raised", lambda ch, m, p, body: got.append(body))
    pump(channel.connection, lambda: len(got) == 1)
    channel.basic_qos(prefetch_count=3)
    pump(channel.connection, lambda: len(got) == 3)
    channel.connection.process_data_events(time_limit=0.2)
    assert got == [b"m0", b"m1", b"m2"]


def test_exclusive_consumer_refuses_others(connect: Connect) -> None:
    channel = connect().channel()
    channel.queue_declare("one-reader")
    tag = channel.basic_consume("one-reader", lambda *a: None, exclusive=True)
    other = connect().channel()
    assert channel_error(lambda: other.basic_consume("one-reader", lambda *a: None)) == 403
    channel.basic_cancel(tag)
    other = connect().channel()
    assert other.basic_consume("one-reader", lambda *a: None).startswith("ctag")


def test_consumer_priorities_serve_higher_priority_first(connect: Connect) -> None:
    conn = connect()
    assert conn._impl.server_capabilities.get("consumer_priorities") is True
    publisher = conn.channel()
    publisher.queue_declare("prioritised-consumers")
    got: dict[str, list[tuple[int, bytes]]] = {"high": [], "low": []}
    channels = {}
    for name, priority, prefetch in (("low", 1, 10), ("high", 5, 2)):
        channel = conn.channel()
        channel.basic_qos(prefetch_count=prefetch)

        def on_message(ch, m, p, body: bytes, name: str = name) -> None:
            got[name].append((m.delivery_tag, body))

        channel.basic_consume(
            "prioritised-consumers", on_message, arguments={"x-priority": priority}
        )
        channels[name] = channel
    for i in range(5):
        publisher.basic_publish("", "prioritised-consumers", f"m{i}".encode())
    pump(conn, lambda: len(got["high"]) + len(got["low"]) == 5)
    # high takes its prefetch first; low, registered earlier, gets only what high cannot take
    assert [body for _, body in got["high"]] == [b"m0", b"m1"]
    assert [body for _, body in got["low"]] == [b"m2", b"m3", b"m4"]
    channels["high"].basic_ack(0, multiple=True)
    for i in range(5, 7):
        publisher.basic_publish("", "prioritised-consumers", f"m{i}".encode())
    pump(conn, lambda: len(got["high"]) == 4)
    assert [body for _, body in got["high"]][2:] == [b"m5", b"m6"]
    assert len(got["low"]) == 3


def test_consumer_priority_must_be_an_integer(connect: Connect) -> None:
    channel = connect().channel()
    channel.queue_declare("bad-consumer-priority")
    code = channel_error(
        lambda: channel.basic_consume(
            "bad-consumer-priority", lambda *a: None, arguments={"x-priority": "high"}
        )
    )
    assert code == 406


def test_update_secret_is_acknowledged_and_the_connection_carries_on(connect: Connect) -> None:
    """connection.update-secret (RabbitMQ's extension, for refreshing expiring credentials):
    Wharf's logins do not expire, so it answers update-secret-ok and keeps the connection, as
    RabbitMQ's internal user store does."""
    conn = connect()
    channel = conn.channel()
    conn.update_secret("new_secret", "token refreshed")
    assert conn.is_open and channel.is_open
    channel.queue_declare("after-update-secret")
    channel.basic_publish("", "after-update-secret", b"still working")
    assert get_body(channel, "after-update-secret") == b"still working"


def test_unbinding_from_a_queue_or_exchange_that_is_gone_succeeds(connect: Connect) -> None:
    # RabbitMQ (since 3.2) answers queue.unbind and exchange.unbind with unbind-ok when the
    # queue or exchange no longer exists: clients' cleanups unbind auto-deleted ones.
    channel = connect().channel()
    channel.exchange_declare("gone-src", "direct", auto_delete=True)
    channel.exchange_declare("gone-dest", "direct")
    channel.queue_declare("gone-q", auto_delete=True)
    channel.queue_bind("gone-q", "gone-src", "k")
    channel.exchange_bind("gone-dest", "gone-src", "k")
    channel.queue_delete("gone-q")
    channel.queue_unbind("gone-q", "gone-src", "k")
    channel.exchange_delete("gone-dest")
    channel.exchange_unbind("gone-dest", "gone-src", "k")
    channel.queue_unbind("never-q", "never-ex", "k")
    channel.exchange_unbind("never-dest", "never-src", "k")
    # still refused: the default exchange, and another connection's exclusive queue
    assert channel_error(lambda: channel.queue_unbind("anything", "", "k")) == 403
    owner = connect().channel()
    owner.queue_declare("gone-excl", exclusive=True)
    channel = connect().channel()
    channel.exchange_declare("gone-ex2", "direct")
    assert channel_error(lambda: channel.queue_unbind("gone-excl", "gone-ex2", "k")) == 405


def test_delete_if_empty_counts_ready_messages_only(connect: Connect) -> None:
    # As in RabbitMQ, messages delivered and not yet acknowledged do not make a queue non-empty.
    channel = connect().channel()
    channel.queue_declare("ie-q")
    channel.basic_publish("", "ie-q", b"held")
    method, _, _ = channel.basic_get("ie-q")
    assert method is not None
    other = connect().channel()
    assert other.queue_delete("ie-q", if_empty=True).method.message_count == 0
