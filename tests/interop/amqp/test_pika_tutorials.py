"""The six RabbitMQ tutorials, with pika's BlockingConnection, against Wharf."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import pika
import pytest
from amqp_inprocess import InProcessBroker
from pika.adapters.blocking_connection import BlockingChannel

pytestmark = pytest.mark.interop


@pytest.fixture
def connect(amqp_broker: InProcessBroker) -> Iterator[pika.BlockingConnection]:
    opened: list[pika.BlockingConnection] = []

    def make() -> pika.BlockingConnection:
        conn = pika.BlockingConnection(
            pika.ConnectionParameters("127.0.0.1", amqp_broker.port, connection_attempts=1)
        )
        opened.append(conn)
        return conn

    yield make  # type: ignore[misc]
    for conn in opened:
        if conn.is_open:
            conn.close()


def drain(channel: BlockingChannel, queue: str, count: int, timeout: float = 10.0) -> list[bytes]:
    """Consume ``count`` messages (acking each) or fail after ``timeout`` seconds."""
    bodies: list[bytes] = []
    for method, _props, body in channel.consume(queue, inactivity_timeout=timeout):
        assert method is not None, f"timed out after {bodies!r}"
        bodies.append(body)
        channel.basic_ack(method.delivery_tag)
        if len(bodies) == count:
            break
    channel.cancel()
    return bodies


def test_hello_world(connect) -> None:
    conn = connect()
    channel = conn.channel()
    channel.queue_declare(queue="hello")
    channel.basic_publish(exchange="", routing_key="hello", body=b"Hello World!")
    received: list[bytes] = []

    def callback(ch, method, properties, body):
        received.append(body)
        ch.stop_consuming()

    channel.basic_consume(queue="hello", on_message_callback=callback, auto_ack=True)
    conn.call_later(10, channel.stop_consuming)
    channel.start_consuming()
    assert received == [b"Hello World!"]


def test_work_queues_fair_dispatch_with_prefetch_one(connect) -> None:
    producer = connect().channel()
    producer.queue_declare(queue="task_queue", durable=True)
    for i in range(6):
        producer.basic_publish(
            exchange="",
            routing_key="task_queue",
            body=f"task {i}".encode(),
            properties=pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent),
        )
    # Two workers with prefetch 1: the first holds its message unacked; the second must
    # receive every other message meanwhile (fair dispatch, no round-robin pre-assignment).
    slow = connect().channel()
    slow.basic_qos(prefetch_count=1)
    fast = connect().channel()
    fast.basic_qos(prefetch_count=1)
    method, _, first = slow.basic_get("task_queue")
    assert first == b"task 0"
    got_by_slow: list[bytes] = []
    slow_consumer = threading.Event()

    def on_slow(ch, m, p, body):
        got_by_slow.append(body)
        slow_consumer.set()

    slow.basic_consume("task_queue", on_slow)  # prefetch 1: gets exactly one, never acks it
    slow.connection.process_data_events(time_limit=0.5)
    fast_bodies = drain(fast, "task_queue", 5 - len(got_by_slow))
    slow.connection.process_data_events(time_limit=0.2)
    assert len(got_by_slow) <= 1
    assert sorted(fast_bodies + got_by_slow) == [f"task {i}".encode() for i in range(1, 6)]
    slow.basic_ack(method.delivery_tag)


def test_publish_subscribe_fanout(connect) -> None:
    channel = connect().channel()
    channel.exchange_declare(exchange="logs", exchange_type="fanout")
    queues = []
    for _ in range(2):
        result = channel.queue_declare(queue="", exclusive=True)
        name = result.method.queue
        assert name.startswith("amq.gen-")
        channel.queue_bind(exchange="logs", queue=name)
        queues.append(name)
    channel.basic_publish(exchange="logs", routing_key="", body=b"info: hello")
    for name in queues:
        assert drain(channel, name, 1) == [b"info: hello"]


def test_routing_direct(connect) -> None:
    channel = connect().channel()
    channel.exchange_declare(exchange="direct_logs", exchange_type="direct")
    errors = channel.queue_declare(queue="", exclusive=True).method.queue
    everything = channel.queue_declare(queue="", exclusive=True).method.queue
    channel.queue_bind(exchange="direct_logs", queue=errors, routing_key="error")
    for severity in ("info", "warning", "error"):
        channel.queue_bind(exchange="direct_logs", queue=everything, routing_key=severity)
    for severity in ("info", "error", "debug"):
        channel.basic_publish("direct_logs", severity, severity.encode())
    assert drain(channel, errors, 1) == [b"error"]
    assert drain(channel, everything, 2) == [b"info", b"error"]
    assert channel.queue_declare(queue=everything, passive=True).method.message_count == 0


def test_topics(connect) -> None:
    channel = connect().channel()
    channel.exchange_declare(exchange="topic_logs", exchange_type="topic")
    bindings = {"kern": ["kern.*"], "critical": ["*.critical"], "all": ["#"], "two": ["*.*"]}
    names = {}
    for label, keys in bindings.items():
        names[label] = channel.queue_declare(queue="", exclusive=True).method.queue
        for key in keys:
            channel.queue_bind(exchange="topic_logs", queue=names[label], routing_key=key)
    keys = ["kern.critical", "kern.info", "cron.critical", "cron", "a.b.c"]
    for key in keys:
        channel.basic_publish("topic_logs", key, key.encode())
    assert drain(channel, names["kern"], 2) == [b"kern.critical", b"kern.info"]
    assert drain(channel, names["critical"], 2) == [b"kern.critical", b"cron.critical"]
    assert drain(channel, names["all"], 5) == [k.encode() for k in keys]
    assert drain(channel, names["two"], 3) == [b"kern.critical", b"kern.info", b"cron.critical"]


def test_rpc_reply_to_and_correlation_id(connect) -> None:
    server_conn = connect()
    server = server_conn.channel()
    server.queue_declare(queue="rpc_queue")
    stop = threading.Event()

    def fib(n: int) -> int:
        return n if n < 2 else fib(n - 1) + fib(n - 2)

    def on_request(ch, method, props, body):
        response = str(fib(int(body)))
        ch.basic_publish(
            exchange="",
            routing_key=props.reply_to,
            properties=pika.BasicProperties(correlation_id=props.correlation_id),
            body=response.encode(),
        )
        ch.basic_ack(delivery_tag=method.delivery_tag)

    server.basic_qos(prefetch_count=1)
    server.basic_consume(queue="rpc_queue", on_message_callback=on_request)

    def serve() -> None:
        while not stop.is_set():
            server_conn.process_data_events(time_limit=0.1)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        client = connect().channel()
        callback_queue = client.queue_declare(queue="", exclusive=True).method.queue
        answers: dict[str, bytes] = {}
        client.basic_consume(
            callback_queue,
            lambda ch, m, p, body: answers.__setitem__(p.correlation_id, body),
            auto_ack=True,
        )
        ids = []
        for n in (10, 20):
            corr = str(uuid.uuid4())
            ids.append(corr)
            client.basic_publish(
                exchange="",
                routing_key="rpc_queue",
                properties=pika.BasicProperties(reply_to=callback_queue, correlation_id=corr),
                body=str(n).encode(),
            )
        deadline = time.monotonic() + 15
        while len(answers) < 2 and time.monotonic() < deadline:
            client.connection.process_data_events(time_limit=0.1)
        assert answers == {ids[0]: b"55", ids[1]: b"6765"}
    finally:
        stop.set()
        thread.join()
