"""Queue semantics on real logs: delivery, acks, priorities, TTL, limits, restart."""

from __future__ import annotations

import pytest
from queue_helpers import Opener, RecordingConsumer

from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.queues.message import Message
from wharf.core.queues.queue import Queue
from wharf.core.queues.registry import VhostRegistry
from wharf.core.queues.vhost import VirtualHost
from wharf.errors import (
    PreconditionError,
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


async def compacting_queue(
    open_registry: Opener, monkeypatch: pytest.MonkeyPatch, messages: int
) -> tuple[VhostRegistry, Queue]:
    """A durable queue "d" holding ``messages`` persistent messages, its state log compacted
    after as few as 3 changes."""
    monkeypatch.setattr("wharf.core.queues.store._SNAPSHOT_EVERY", 3)
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.NEVER))
    q = await reg["/"].declare_queue("d", durable=True)
    for i in range(messages):
        reg["/"].publish_nowait(msg(b"%d" % i, key="d", persistent=True))
    return reg, q


async def test_state_log_compaction_keeps_state(
    open_registry: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg, q = await compacting_queue(open_registry, monkeypatch, 6)
    v = reg["/"]
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


async def test_the_state_log_is_compacted_only_after_as_many_changes_as_live_records(
    open_registry: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A compaction writes every live record: waiting for as many changes keeps draining a deep
    # queue linear (it compacted every 20,000 changes, each time writing all that was left).
    reg, q = await compacting_queue(open_registry, monkeypatch, 40)

    def take_and_ack(count: int) -> None:
        taken = [q.basic_get(no_ack=False) for _ in range(count)]
        q.ack([d.delivery_id for d in taken if d])

    take_and_ack(10)  # 20 changes (10 deliveries, 10 acks), 30 live
    await reg.maintain()
    state = q.store.state
    assert state is not None and state.next_offset > 0
    assert state.log_start_offset == 0  # not compacted yet
    take_and_ack(10)  # 40 changes since, 20 live
    await reg.maintain()
    assert state.log_start_offset > 0  # compacted
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.NEVER))
    q = reg["/"].queues["d"]
    left = [q.basic_get(no_ack=True) for _ in range(21)]
    assert [d.message.body for d in left if d] == [b"%d" % i for i in range(20, 40)]


async def test_confirm_after_queue_deleted(open_registry: Opener) -> None:
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS))
    v = reg["/"]
    await v.declare_queue("d", durable=True)
    result = v.publish_nowait(msg(b"p", key="d", persistent=True))
    await v.delete_queue("d")
    await result.wait_durable()  # no error: the queue and its message are gone
    assert result.routed and result.queues == ["d"]


async def test_maintenance_skips_a_queue_with_nothing_new(open_registry: Opener) -> None:
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.NEVER))
    v = reg["/"]
    durable = await v.declare_queue("d", durable=True)
    transient = await v.declare_queue("t")
    assert not durable.needs_maintenance and not transient.needs_maintenance
    for name in ("d", "t"):
        v.publish_nowait(msg(b"m", key=name, persistent=name == "d"))
    assert durable.needs_maintenance and transient.needs_maintenance
    await reg.maintain()
    assert not durable.needs_maintenance and not transient.needs_maintenance
    for q in (durable, transient):
        got = q.basic_get(no_ack=False)
        assert got is not None
        q.ack([got.delivery_id])
        # an ack frees log space, on disk or in memory
        assert q.needs_maintenance
    await reg.maintain()
    assert not durable.needs_maintenance and not transient.needs_maintenance


async def test_the_timer_passes_over_a_queue_only_while_it_has_timed_work(
    open_registry: Opener,
) -> None:
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.NEVER))
    v = reg["/"]
    empty = await v.declare_queue("e", durable=True)
    expiring = await v.declare_queue("x", arguments={"x-expires": 60_000})
    assert empty.timeless and not expiring.timeless  # x-expires is timed work
    v.publish_nowait(msg(b"m", key="e"))
    assert empty.timeless  # a message without a TTL waits for a consumer, not for the timer
    v.publish_nowait(msg(b"ttl", key="e", expiration_ms=60_000))
    assert not empty.timeless  # a ready message that expires is timed work
    assert empty.basic_get(no_ack=True) is not None
    assert empty.basic_get(no_ack=True) is not None
    assert empty.timeless


async def test_the_timer_forgets_an_idle_queue_until_it_changes(
    open_registry: Opener, clock: VirtualClock
) -> None:
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.NEVER))
    v = reg["/"]
    q = await v.declare_queue("q", durable=True)
    await reg.tick()
    assert q not in v._active  # nothing timed, nothing to maintain: not looked at again
    v.publish_nowait(msg(b"short-lived", key="q", persistent=True, expiration_ms=100))
    assert q in v._active
    clock.advance(100)
    await reg.tick()
    assert q.message_count == 0 and q.expired == 1  # expired by the timer
    await reg.maintain()  # the expiry's settlement written
    await reg.tick()
    assert q not in v._active
    v.publish_nowait(msg(b"kept", key="q", persistent=True))
    assert q in v._active
    await reg.maintain()
    await reg.tick()
    assert q not in v._active and q.message_count == 1  # holding it needs no timer
    consumer = RecordingConsumer()
    q.add_consumer(consumer)
    assert consumer.bodies() == [b"kept"]  # delivered on subscribing, the timer not looking


async def test_the_shared_empty_containers_stay_empty_through_a_queues_life(
    open_registry: Opener, clock: VirtualClock
) -> None:
    from wharf.core.queues import queue as queue_module
    from wharf.core.queues import reclaim, store

    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS, queue_segment_bytes=4096))
    v = reg["/"]
    await v.declare_queue("dlq", durable=True)
    await v.declare_queue(
        "q",
        durable=True,
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"},
    )
    await v.declare_queue("plain", durable=True)
    for i in range(200):
        await v.publish(Message.build("", "q", b"x" * 100 + b"%d" % i, persistent=True))
        await v.publish(Message.build("", "plain", b"%d" % i, persistent=True))
    consumer = RecordingConsumer(prefetch=50)
    v.queues["q"].add_consumer(consumer)
    while consumer.outstanding:
        ids = list(consumer.outstanding)
        consumer.outstanding.clear()
        v.queues["q"].reject(ids[:10], requeue=False)  # dead-lettered to dlq
        v.queues["q"].reject(ids[10:20], requeue=True)
        v.queues["q"].ack(ids[20:])
    while v.queues["plain"].basic_get(no_ack=False) is not None:
        pass
    await reg.maintain()
    await v.delete_queue("plain")
    reg = await open_registry()
    assert reg["/"].queues["dlq"].message_count > 0
    assert store.NONE_PENDING == [] and store._NO_CACHE == {}
    assert reclaim._NONE_SETTLING == {} and queue_module._NO_ARGUMENTS == {}
