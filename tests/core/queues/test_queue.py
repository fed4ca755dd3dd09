"""Queue semantics on real logs: delivery, acks, priorities, TTL, dead letters, limits, restart."""

from __future__ import annotations

import datetime
import os
from pathlib import Path

import pytest
from queue_helpers import Opener, RecordingConsumer

from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.queues.message import Message
from wharf.core.queues.vhost import VirtualHost
from wharf.errors import (
    AccessRefusedError,
    NotFoundError,
    PreconditionError,
    ResourceLockedError,
)
from wharf.testing.clock import VirtualClock


def msg(body: bytes, key: str = "q", **kw: object) -> Message:
    return Message.build("", key, body, **kw)  # type: ignore[arg-type]


async def test_publish_consume_ack_round_robin(vhost: VirtualHost) -> None:
    q = await vhost.declare_queue("q")
    a, b = RecordingConsumer("a"), RecordingConsumer("b")
    q.add_consumer(a)
    q.add_consumer(b)
    for i in range(4):
        assert (await vhost.publish(msg(b"%d" % i))).routed
    assert a.bodies() == [b"0", b"2"] and b.bodies() == [b"1", b"3"]
    assert q.unacked_count == 4 and q.message_count == 0
    a.ack_all()
    b.ack_all()
    assert q.unacked_count == 0 and q.acked == 4 and q.delivered == 4


async def test_prefetch_credit_and_dispatch(vhost: VirtualHost) -> None:
    q = await vhost.declare_queue("q")
    c = RecordingConsumer(prefetch=2)
    q.add_consumer(c)
    for i in range(5):
        vhost.publish_nowait(msg(b"%d" % i))
    assert c.bodies() == [b"0", b"1"] and q.message_count == 3
    c.ack_all()  # ack dispatches again
    assert c.bodies() == [b"0", b"1", b"2", b"3"]


async def test_reject_requeue_goes_back_in_place_redelivered(vhost: VirtualHost) -> None:
    q = await vhost.declare_queue("q")
    for i in range(3):
        vhost.publish_nowait(msg(b"%d" % i))
    first = q.basic_get(no_ack=False)
    second = q.basic_get(no_ack=False)
    assert first and second and not first.redelivered and first.message_count == 2
    q.reject([first.delivery_id], requeue=True)
    again = q.basic_get(no_ack=False)
    assert again and again.message.body == b"0" and again.redelivered
    assert again.delivery_count == 2
    with pytest.raises(PreconditionError):
        q.ack([999])


async def test_no_ack_consumer_and_get(vhost: VirtualHost) -> None:
    q = await vhost.declare_queue("q")
    vhost.publish_nowait(msg(b"x"))
    got = q.basic_get(no_ack=True)
    assert got and got.message.body == b"x" and q.unacked_count == 0
    assert q.basic_get(no_ack=True) is None
    c = RecordingConsumer(no_ack=True)
    q.add_consumer(c)
    vhost.publish_nowait(msg(b"y"))
    assert c.bodies() == [b"y"] and q.unacked_count == 0


async def test_priorities(vhost: VirtualHost) -> None:
    q = await vhost.declare_queue("q", arguments={"x-max-priority": 5})
    for body, prio in [(b"a", 1), (b"b", 9), (b"c", 5), (b"d", 0), (b"e", 5)]:
        vhost.publish_nowait(msg(body, priority=prio))
    order = []
    while (d := q.basic_get(no_ack=True)) is not None:
        order.append(d.message.body)
    # 9 is capped to 5: b, c, e share the top level in FIFO order
    assert order == [b"b", b"c", b"e", b"a", b"d"]


async def test_consumer_loss_redelivers(vhost: VirtualHost) -> None:
    q = await vhost.declare_queue("q")
    a = RecordingConsumer("a")
    q.add_consumer(a)
    vhost.publish_nowait(msg(b"1"))
    vhost.publish_nowait(msg(b"2"))
    q.remove_consumer(a)
    assert q.message_count == 2
    b = RecordingConsumer("b")
    q.add_consumer(b)
    assert [(d.message.body, d.redelivered) for d in b.deliveries] == [(b"1", True), (b"2", True)]


async def test_cancel_without_requeue_keeps_unacked(vhost: VirtualHost) -> None:
    q = await vhost.declare_queue("q")
    a = RecordingConsumer("a")
    q.add_consumer(a)
    vhost.publish_nowait(msg(b"1"))
    q.remove_consumer(a, requeue_unacked=False)
    assert q.unacked_count == 1
    a.ack_all()
    assert q.unacked_count == 0 and q.message_count == 0


async def test_ttl_expiry_dead_letters_with_x_death(
    vhost: VirtualHost, clock: VirtualClock
) -> None:
    await vhost.declare_exchange("dlx", "fanout")
    dlq = await vhost.declare_queue("dlq")
    await vhost.bind_queue("dlq", "dlx", "")
    q = await vhost.declare_queue(
        "work", arguments={"x-message-ttl": 1000, "x-dead-letter-exchange": "dlx"}
    )
    vhost.publish_nowait(msg(b"old", key="work", headers={"k": "v"}))
    clock.advance(500)
    vhost.publish_nowait(msg(b"short", key="work", expiration_ms=100))
    clock.advance(600)
    assert q.next_deadline() == clock.now_ms() - 100
    await vhost.tick()  # "old" expired at the head; "short" (expired too) is head next
    assert q.message_count == 0 and q.expired == 2
    dead = [dlq.basic_get(no_ack=True) for _ in range(2)]
    assert [d.message.body for d in dead if d] == [b"old", b"short"]
    first = dead[0]
    assert first is not None
    h = first.message.headers
    assert h["k"] == "v"
    assert h["x-first-death-reason"] == "expired" and h["x-first-death-queue"] == "work"
    assert h["x-last-death-exchange"] == ""
    (entry,) = h["x-death"]
    assert entry["count"] == 1 and entry["reason"] == "expired" and entry["queue"] == "work"
    assert entry["exchange"] == "" and entry["routing-keys"] == ["work"]
    assert entry["time"] == datetime.datetime.fromtimestamp(clock.now_ms() // 1000, datetime.UTC)
    assert first.message.exchange == "dlx"
    second = dead[1]
    assert second is not None
    assert second.message.expiration_ms is None
    assert second.message.headers["x-death"][0]["original-expiration"] == "100"


async def test_x_death_count_grows_and_routing_key_override(vhost: VirtualHost) -> None:
    # work -> (reject) -> dlx -> retry queue with key "again" -> ... -> work
    await vhost.declare_exchange("dlx", "direct")
    work = await vhost.declare_queue(
        "work",
        arguments={"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "again"},
    )
    retry = await vhost.declare_queue("retry")
    await vhost.bind_queue("retry", "dlx", "again")
    vhost.publish_nowait(msg(b"m", key="work"))
    for _ in range(3):
        d = work.basic_get(no_ack=False)
        assert d is not None
        work.reject([d.delivery_id], requeue=False)
        back = retry.basic_get(no_ack=True)
        assert back is not None and back.message.routing_key == "again"
        vhost.publish_nowait(back.message.with_route("", "work"))
    final = work.basic_get(no_ack=True)
    assert final is not None
    deaths = final.message.headers["x-death"]
    assert len(deaths) == 1 and deaths[0]["count"] == 3 and deaths[0]["reason"] == "rejected"


async def test_dead_letter_cycle_is_dropped(vhost: VirtualHost, clock: VirtualClock) -> None:
    q = await vhost.declare_queue(
        "loop",
        arguments={"x-message-ttl": 10, "x-dead-letter-exchange": ""},
    )
    vhost.publish_nowait(msg(b"m", key="loop"))
    clock.advance(20)
    await vhost.tick()
    assert q.message_count == 0  # expired into itself: a cycle, dropped


@pytest.mark.parametrize("overflow", ["drop-head", "reject-publish", "reject-publish-dlx"])
async def test_overflow_modes(vhost: VirtualHost, overflow: str) -> None:
    dlq = await vhost.declare_queue("dlq")
    q = await vhost.declare_queue(
        "q",
        arguments={
            "x-max-length": 2,
            "x-overflow": overflow,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "dlq",
        },
    )
    results = [vhost.publish_nowait(msg(b"%d" % i)) for i in range(3)]
    kept = [d.message.body for d in iter(lambda: q.basic_get(no_ack=True), None)]
    dead = [d.message.body for d in iter(lambda: dlq.basic_get(no_ack=True), None)]
    if overflow == "drop-head":
        assert kept == [b"1", b"2"] and dead == [b"0"]
        assert not any(r.rejected for r in results)
    else:
        assert kept == [b"0", b"1"]
        assert [r.rejected for r in results] == [False, False, True]
        assert dead == ([b"2"] if overflow == "reject-publish-dlx" else [])


async def test_max_length_bytes(vhost: VirtualHost) -> None:
    q = await vhost.declare_queue("q", arguments={"x-max-length-bytes": 10})
    for body in [b"aaaa", b"bbbb", b"cccc"]:
        vhost.publish_nowait(msg(body))
    assert q.message_count == 2 and q.dropped == 1


async def test_delivery_limit(vhost: VirtualHost) -> None:
    dlq = await vhost.declare_queue("dlq")
    q = await vhost.declare_queue(
        "q",
        durable=True,
        arguments={
            "x-queue-type": "quorum",
            "x-delivery-limit": 1,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "dlq",
        },
    )
    vhost.publish_nowait(msg(b"poison"))
    for _ in range(2):
        d = q.basic_get(no_ack=False)
        assert d is not None
        q.reject([d.delivery_id], requeue=True)
    assert q.message_count == 0
    dead = dlq.basic_get(no_ack=True)
    assert dead is not None
    assert dead.message.headers["x-death"][0]["reason"] == "delivery_limit"


async def test_single_active_consumer(vhost: VirtualHost) -> None:
    q = await vhost.declare_queue("q", arguments={"x-single-active-consumer": True})
    a, b = RecordingConsumer("a"), RecordingConsumer("b")
    q.add_consumer(a)
    q.add_consumer(b)
    for i in range(3):
        vhost.publish_nowait(msg(b"%d" % i))
    assert len(a.deliveries) == 3 and not b.deliveries and q.active_consumer is a
    q.remove_consumer(a)
    assert q.active_consumer is b and len(b.deliveries) == 3


async def test_exclusive_consumer(vhost: VirtualHost) -> None:
    q = await vhost.declare_queue("q")
    q.add_consumer(RecordingConsumer("a", exclusive=True))
    with pytest.raises(AccessRefusedError):
        q.add_consumer(RecordingConsumer("b"))
    q2 = await vhost.declare_queue("q2")
    q2.add_consumer(RecordingConsumer("a"))
    with pytest.raises(AccessRefusedError):
        q2.add_consumer(RecordingConsumer("b", exclusive=True))


async def test_exclusive_queue_ownership(vhost: VirtualHost) -> None:
    await vhost.declare_queue("ex", exclusive=True, owner="conn1")
    with pytest.raises(ResourceLockedError):
        await vhost.declare_queue("ex", exclusive=True, owner="conn2")
    with pytest.raises(ResourceLockedError):
        vhost.get_queue("ex", owner="conn2")
    await vhost.connection_closed("conn1")
    assert "ex" not in vhost.queues


async def test_auto_delete_and_cancel_notification(vhost: VirtualHost) -> None:
    q = await vhost.declare_queue("ad", auto_delete=True)
    c = RecordingConsumer()
    q.add_consumer(c)
    q.remove_consumer(c)
    assert "ad" not in vhost.queues
    q2 = await vhost.declare_queue("gone")
    c2 = RecordingConsumer()
    q2.add_consumer(c2)
    with pytest.raises(PreconditionError):
        await vhost.delete_queue("gone", if_unused=True)
    await vhost.delete_queue("gone")
    assert c2.cancelled_by == ["gone"]


async def test_x_expires_deletes_idle_queue(vhost: VirtualHost, clock: VirtualClock) -> None:
    await vhost.declare_queue("idle", arguments={"x-expires": 1000})
    clock.advance(999)
    await vhost.tick()
    assert "idle" in vhost.queues
    clock.advance(1)
    await vhost.tick()
    assert "idle" not in vhost.queues


async def test_declare_rules(vhost: VirtualHost) -> None:
    named = await vhost.declare_queue("")
    assert named.name.startswith("amq.gen-")
    with pytest.raises(NotFoundError):
        await vhost.declare_queue("nope", passive=True)
    await vhost.declare_queue("q", arguments={"x-message-ttl": 5})
    with pytest.raises(PreconditionError):
        await vhost.declare_queue("q", arguments={"x-message-ttl": 6})
    with pytest.raises(PreconditionError):
        await vhost.declare_queue("q", durable=True, arguments={"x-message-ttl": 5})
    assert (await vhost.declare_queue("q", arguments={"x-message-ttl": 5, "other": 1})).name
    for bad in [
        {"x-message-ttl": -1},
        {"x-message-ttl": "5"},
        {"x-max-length": True},
        {"x-overflow": "sideways"},
        {"x-queue-type": "stream"},
        {"x-expires": 0},
        {"x-dead-letter-routing-key": "k"},
        {"x-single-active-consumer": 1},
    ]:
        with pytest.raises(PreconditionError):
            await vhost.declare_queue("bad", arguments=bad)
    with pytest.raises(PreconditionError):
        await vhost.declare_queue("qq", arguments={"x-queue-type": "quorum"})  # not durable
    with pytest.raises(AccessRefusedError):
        await vhost.declare_queue("amq.mine")
    q = vhost.queues["q"]
    vhost.publish_nowait(msg(b"1"))
    with pytest.raises(PreconditionError):
        await vhost.delete_queue("q", if_empty=True)
    assert await vhost.purge_queue("q") == 1
    assert await vhost.delete_queue("q", if_empty=True) == 0
    assert q.deleted


async def test_persistent_survives_restart_transient_does_not(open_registry: Opener) -> None:
    reg = await open_registry()
    v = reg["/"]
    q = await v.declare_queue("d", durable=True)
    await v.declare_queue("nd", durable=False)
    await v.publish(msg(b"p", key="d", persistent=True))
    await v.publish(msg(b"t", key="d"))
    await v.publish(msg(b"p", key="nd", persistent=True))
    assert q.message_count == 2
    reg = await open_registry()
    v = reg["/"]
    assert "nd" not in v.queues
    assert v.queues["d"].message_count == 1


async def test_restart_acked_gone_unacked_redelivered(open_registry: Opener) -> None:
    reg = await open_registry()
    v = reg["/"]
    q = await v.declare_queue("d", durable=True, arguments={"x-max-priority": 3})
    for i in range(4):
        await v.publish(msg(b"%d" % i, key="d", persistent=True, priority=i % 2))
    c = RecordingConsumer(prefetch=3)
    q.add_consumer(c)
    assert c.bodies() == [b"1", b"3", b"0"]
    q.ack([c.deliveries[0].delivery_id])
    reg = await open_registry()
    q = reg["/"].queues["d"]
    got = [q.basic_get(no_ack=True) for _ in range(3)]
    assert [(d.message.body, d.redelivered, d.delivery_count) for d in got if d] == [
        (b"3", True, 2),
        (b"0", True, 2),
        (b"2", False, 1),
    ]
    assert q.basic_get(no_ack=True) is None
    reg = await open_registry()
    assert reg["/"].queues["d"].message_count == 0


async def test_publish_waits_for_fsync_under_always(open_registry: Opener) -> None:
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS))
    v = reg["/"]
    q = await v.declare_queue("d", durable=True)
    await v.publish(msg(b"p", key="d", persistent=True))
    assert q.store.messages.durable_offset >= q.store.messages.next_offset


def _segment_files(path: Path) -> list[str]:
    return sorted(f for f in os.listdir(path) if f.endswith(".log"))


async def test_reclaims_acked_segments(open_registry: Opener, tmp_path: Path) -> None:
    cfg = BrokerConfig(fsync=FsyncPolicy.NEVER, queue_segment_bytes=4096)
    reg = await open_registry(cfg)
    v = reg["/"]
    q = await v.declare_queue("d", durable=True)
    for i in range(200):
        v.publish_nowait(msg(b"x" * 100 + b"%d" % i, key="d", persistent=True))
    log_dir = Path(q.store.messages.path)  # type: ignore[attr-defined]
    before = len(_segment_files(log_dir))
    assert before > 3
    while (d := q.basic_get(no_ack=False)) is not None:
        q.ack([d.delivery_id])
    await reg.maintain()
    assert len(_segment_files(log_dir)) == 1
    assert q.store.messages.log_start_offset == q.store.messages.next_offset


async def test_reclaim_moves_a_pinning_message_to_the_tail(
    open_registry: Opener,
) -> None:
    cfg = BrokerConfig(fsync=FsyncPolicy.NEVER, queue_segment_bytes=4096)
    reg = await open_registry(cfg)
    v = reg["/"]
    q = await v.declare_queue("d", durable=True)
    v.publish_nowait(msg(b"old", key="d", persistent=True))
    pin = q.basic_get(no_ack=False)  # delivered, never acked: pins the first segment
    assert pin is not None
    for i in range(300):
        v.publish_nowait(msg(b"y" * 100 + b"%d" % i, key="d", persistent=True))
        d = q.basic_get(no_ack=False)
        assert d is not None
        q.ack([d.delivery_id])
    log_dir = Path(q.store.messages.path)  # type: ignore[attr-defined]
    assert len(_segment_files(log_dir)) > 4
    await reg.maintain()
    await reg.maintain()
    assert len(_segment_files(log_dir)) <= 2
    q.ack([pin.delivery_id])  # the delivery id survived the move
    v.publish_nowait(msg(b"new", key="d", persistent=True))
    reg = await open_registry(cfg)
    q = reg["/"].queues["d"]
    got = q.basic_get(no_ack=True)
    assert got is not None and got.message.body == b"new" and q.message_count == 0


async def test_moved_unacked_message_is_redelivered_after_restart(open_registry: Opener) -> None:
    cfg = BrokerConfig(fsync=FsyncPolicy.NEVER, queue_segment_bytes=4096)
    reg = await open_registry(cfg)
    v = reg["/"]
    q = await v.declare_queue("d", durable=True)
    v.publish_nowait(msg(b"old", key="d", persistent=True))
    assert q.basic_get(no_ack=False) is not None
    for i in range(300):
        v.publish_nowait(msg(b"z" * 100 + b"%d" % i, key="d", persistent=True))
        d = q.basic_get(no_ack=False)
        assert d is not None
        q.ack([d.delivery_id])
    await reg.maintain()
    reg = await open_registry(cfg)
    q = reg["/"].queues["d"]
    got = q.basic_get(no_ack=True)
    assert got is not None and got.message.body == b"old" and got.redelivered
    assert q.basic_get(no_ack=True) is None


async def test_ttl_zero_reaches_a_waiting_consumer_only(vhost: VirtualHost) -> None:
    q = await vhost.declare_queue("q", arguments={"x-message-ttl": 0})
    vhost.publish_nowait(msg(b"nobody-waiting"))
    assert q.message_count == 0 and q.expired == 1
    c = RecordingConsumer(prefetch=1)
    q.add_consumer(c)
    vhost.publish_nowait(msg(b"taken"))
    vhost.publish_nowait(msg(b"no-credit"))
    assert c.bodies() == [b"taken"] and q.message_count == 0 and q.expired == 2


async def test_bad_ack_changes_nothing_and_deleted_queue_ignores_acks(
    vhost: VirtualHost,
) -> None:
    q = await vhost.declare_queue("q")
    vhost.publish_nowait(msg(b"1"))
    d = q.basic_get(no_ack=False)
    assert d is not None
    with pytest.raises(PreconditionError):
        q.ack([d.delivery_id, 12345])
    assert q.unacked_count == 1
    q.ack([d.delivery_id])
    vhost.publish_nowait(msg(b"2"))
    d2 = q.basic_get(no_ack=False)
    assert d2 is not None
    await vhost.delete_queue("q")
    q.ack([d2.delivery_id])
    q.reject([d2.delivery_id], requeue=True)
    assert q.message_count == 0


async def test_small_live_messages_are_not_moved(open_registry: Opener) -> None:
    # a full log of tiny live messages is not "pinned": nothing to gain by moving them
    cfg = BrokerConfig(fsync=FsyncPolicy.NEVER, queue_segment_bytes=4096)
    reg = await open_registry(cfg)
    v = reg["/"]
    q = await v.declare_queue("d", durable=True)
    for _ in range(300):
        v.publish_nowait(msg(b"t", key="d", persistent=True))
    end = q.store.next_offset
    await reg.maintain()
    assert q.store.next_offset == end and q.message_count == 300


async def test_sequence_numbers_are_not_reused_after_restart(open_registry: Opener) -> None:
    reg = await open_registry()
    q = await reg["/"].declare_queue("d", durable=True)
    reg["/"].publish_nowait(msg(b"first", key="d", persistent=True))
    d = q.basic_get(no_ack=False)
    assert d is not None
    q.ack([d.delivery_id])
    reg = await open_registry()
    reg["/"].publish_nowait(msg(b"second", key="d", persistent=True))
    reg = await open_registry()
    got = reg["/"].queues["d"].basic_get(no_ack=True)
    assert got is not None and got.message.body == b"second"
    assert not got.redelivered and got.delivery_count == 1


async def test_state_log_compaction_keeps_state(
    open_registry: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("wharf.core.queues.store._SNAPSHOT_EVERY", 3)
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.NEVER))
    v = reg["/"]
    q = await v.declare_queue("d", durable=True)
    for i in range(6):
        v.publish_nowait(msg(b"%d" % i, key="d", persistent=True))
    delivered = [q.basic_get(no_ack=False) for _ in range(4)]
    ids = [d.delivery_id for d in delivered if d]
    q.ack(ids[:2])  # 0 and 1 acked; 2 and 3 delivered, unacked; 4 and 5 ready
    await reg.maintain()
    state = q.store.state
    assert state is not None and state.log_start_offset > 0
    v.publish_nowait(msg(b"6", key="d", persistent=True))
    q.ack(ids[2:3])  # 2 acked after the snapshot
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.NEVER))
    q = reg["/"].queues["d"]
    got = [q.basic_get(no_ack=True) for _ in range(5)]
    assert [(d.message.body, d.delivery_count) for d in got if d] == [
        (b"3", 2),
        (b"4", 1),
        (b"5", 1),
        (b"6", 1),
    ]


async def test_confirm_after_queue_deleted(open_registry: Opener) -> None:
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS))
    v = reg["/"]
    await v.declare_queue("d", durable=True)
    result = v.publish_nowait(msg(b"p", key="d", persistent=True))
    await v.delete_queue("d")
    await result.wait_durable()  # no error: the queue and its message are gone
    assert result.routed and result.queues == ["d"]
