"""The AMQP consumer rows: registrations fenced on the node's lease, exclusive consumers
refused cluster-wide, the single active consumer handed on in registration order, auto-delete
and x-expires queues deleted when their last consumer goes or they stay unused, and the sweep
of dead epochs' consumers."""

from __future__ import annotations

import secrets

import pytest

from wharf.cluster.catalog import NodeLease
from wharf.cluster.database import Database
from wharf.cluster.nodes import LeaseLostError, Membership, MembershipSettings
from wharf.cluster.queues import consumers as cons
from wharf.cluster.queues import definitions as defs
from wharf.cluster.queues import messages as msgs
from wharf.errors import NotFoundError


async def make_queue(
    db: Database, name: str = "q", *, auto_delete: bool = False, single_active: bool = False,
    expires_ms: int | None = None,
) -> int:  # fmt: skip
    row, created = await defs.declare_queue(
        db, defs.QueueRow(0, "/", name, True, auto_delete, "", single_active=single_active,
                          expires_ms=expires_ms),
    )  # fmt: skip
    assert created
    return row.id


async def other_node(db: Database, name: str = "node-b") -> NodeLease:
    membership = Membership(
        db, name, "127.0.0.1", {}, MembershipSettings(heartbeat_interval=1.0, lease_duration=60.0)
    )
    await membership.register()
    return NodeLease.of(membership)


async def expire(db: Database, node_id: str) -> None:
    async with db.transaction() as tx:
        await tx.execute(
            "UPDATE nodes SET lease_expires_at = clock_timestamp() - interval '1 second'"
            " WHERE id = %s",
            (node_id,),
        )


async def queue_names(db: Database) -> list[str]:
    return [q.name for q in (await defs.load_definitions(db)).queues]


def token() -> int:
    return secrets.randbits(63)


async def register(db: Database, lease: NodeLease, queue: int, tag: str,
                   exclusive: bool = False) -> cons.Registration:  # fmt: skip
    registration = await cons.register(db, lease, queue, tag, token(), exclusive=exclusive)
    assert registration is not None
    return registration


async def test_an_exclusive_consumer_excludes_every_other_on_any_node(
    db: Database, node_lease: NodeLease
) -> None:
    queue = await make_queue(db)
    b = await other_node(db)
    first = await register(db, node_lease, queue, "a1")
    assert await cons.register(db, b, queue, "b1", token(), exclusive=True) is None  # a1 exists
    await cons.deregister(db, node_lease, [first.id])
    await register(db, b, queue, "b1", exclusive=True)
    assert await cons.register(db, node_lease, queue, "a2", token()) is None  # b1 is exclusive
    assert await cons.register(db, node_lease, queue, "a3", token(), exclusive=True) is None
    await expire(db, b.node_id)  # a dead node's exclusive consumer excludes nobody
    await register(db, node_lease, queue, "a4")


async def test_the_single_active_consumer_goes_to_the_next_registered_on_any_node(
    db: Database, node_lease: NodeLease
) -> None:
    queue = await make_queue(db, single_active=True)
    b = await other_node(db)
    first = await register(db, node_lease, queue, "a1")
    second = await register(db, b, queue, "b1")
    third = await register(db, node_lease, queue, "a2")
    assert (first.active, second.active, third.active) == (True, False, False)
    assert await cons.active_consumers(db, [queue]) == {queue: first.id}
    departure = await cons.deregister(db, node_lease, [first.id])
    assert departure == cons.Departure([queue], [])
    assert await cons.active_consumers(db, [queue]) == {queue: second.id}
    # only the active consumer's node claims
    await msgs.MessageWriter(db).publish([msgs.NewMessage(queue, 0, None, "", "q", b"", b"x")])
    assert await msgs.claim(db, node_lease, queue, 5, consumer=third.id) == []
    [claimed] = await msgs.claim(db, b, queue, 5, consumer=second.id)
    assert claimed.body == b"x"


async def test_a_registration_run_again_with_its_token_is_the_same_one(
    db: Database, node_lease: NodeLease
) -> None:
    queue = await make_queue(db, single_active=True)
    mine = token()
    first = await cons.register(db, node_lease, queue, "a1", mine)
    again = await cons.register(db, node_lease, queue, "a1", mine)  # after an unknown commit
    assert first == again == cons.Registration(again.id, True)
    assert await cons.counts(db, None, queue) == (0, 1)


async def test_a_queue_without_single_active_consumer_has_no_active_consumer(
    db: Database, node_lease: NodeLease
) -> None:
    queue = await make_queue(db)
    assert not (await register(db, node_lease, queue, "a1")).active
    assert await cons.active_consumers(db, [queue]) == {}


async def test_an_auto_delete_queue_goes_with_its_last_consumer_anywhere(
    db: Database, node_lease: NodeLease
) -> None:
    queue = await make_queue(db, "auto", auto_delete=True)
    b = await other_node(db)
    mine = await register(db, node_lease, queue, "a1")
    theirs = await register(db, b, queue, "b1")
    assert await cons.deregister(db, node_lease, [mine.id]) == cons.Departure([], [])
    assert await queue_names(db) == ["auto"]
    assert await cons.deregister(db, b, [theirs.id]) == cons.Departure([], [queue])
    assert await queue_names(db) == []
    with pytest.raises(NotFoundError):
        await cons.register(db, b, queue, "b2", token())


async def test_registrations_and_removals_are_fenced_on_the_lease(
    db: Database, node_lease: NodeLease
) -> None:
    queue = await make_queue(db, "auto", auto_delete=True)
    b = await other_node(db)
    theirs = await register(db, b, queue, "b1")
    await expire(db, b.node_id)
    with pytest.raises(LeaseLostError):
        await cons.register(db, b, queue, "b2", token())
    with pytest.raises(LeaseLostError):
        await cons.deregister(db, b, [theirs.id])
    assert await queue_names(db) == ["auto"]  # the stale removal deleted nothing


async def test_the_sweep_removes_dead_consumers_then_promotes_and_auto_deletes(
    db: Database, node_lease: NodeLease
) -> None:
    single = await make_queue(db, "single", single_active=True)
    auto = await make_queue(db, "auto", auto_delete=True)
    await make_queue(db, "never-consumed", auto_delete=True)  # never had one: stays
    b = await other_node(db)
    await register(db, b, single, "b1")
    waiting = await register(db, node_lease, single, "a1")
    await register(db, b, auto, "b2")
    result = await msgs.sweep(db, node_lease)
    assert result.consumers == cons.SweptConsumers()  # everyone is alive
    await expire(db, b.node_id)
    result = await msgs.sweep(db, node_lease)
    assert result.consumers == cons.SweptConsumers(removed=2, promoted=1, auto_deleted=1)
    assert await cons.active_consumers(db, [single]) == {single: waiting.id}
    assert sorted(await queue_names(db)) == ["never-consumed", "single"]


async def test_an_unused_x_expires_queue_is_deleted_by_the_sweep(
    db: Database, node_lease: NodeLease
) -> None:
    await make_queue(db, "idle", expires_ms=60_000)
    used = await make_queue(db, "used", expires_ms=60_000)
    consumed = await make_queue(db, "consumed", expires_ms=60_000)
    await register(db, node_lease, consumed, "a1")
    result = await msgs.sweep(db, node_lease)
    assert result.consumers.expired == 0
    async with db.transaction() as tx:  # an hour passes for all three
        await tx.execute("UPDATE amqp_queues SET last_used_at = last_used_at - interval '1 hour'")
    await cons.touch(db, node_lease, used)  # a basic.get
    result = await msgs.sweep(db, node_lease)
    assert result.consumers.expired == 1
    assert sorted(await queue_names(db)) == ["consumed", "used"]


async def test_declare_counts_report_other_nodes_consumers_and_renew_x_expires(
    db: Database, node_lease: NodeLease
) -> None:
    queue = await make_queue(db, "e", expires_ms=60_000)
    b = await other_node(db)
    await register(db, node_lease, queue, "a1")
    await register(db, b, queue, "b1")
    await register(db, b, queue, "b2")
    await msgs.MessageWriter(db).publish([msgs.NewMessage(queue, 0, None, "", "e", b"", b"x")])
    assert await cons.counts(db, node_lease, queue) == (1, 2)
    assert await cons.counts(db, None, queue) == (1, 3)  # a node without a lease: all of them
    async with db.transaction() as tx:
        await tx.execute("UPDATE amqp_queues SET last_used_at = last_used_at - interval '1 hour'")
        before = await tx.fetchval("SELECT last_used_at FROM amqp_queues")
    await cons.counts(db, node_lease, queue)
    async with db.transaction() as tx:
        assert await tx.fetchval("SELECT last_used_at FROM amqp_queues") > before
