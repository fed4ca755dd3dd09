"""Dead-lettering and reject-publish in the SQL paths of the cluster's queues: the copy goes in
with the transaction that deletes the original (settle, sweep, claim, publish trim), a fenced
epoch moves nothing, and a full reject-publish queue refuses one publish of a group commit."""

from __future__ import annotations

import asyncio

import pytest

from wharf.cluster.catalog import NodeLease
from wharf.cluster.database import Database, DatabaseError
from wharf.cluster.nodes import Membership, MembershipSettings
from wharf.cluster.queues import definitions as defs
from wharf.cluster.queues import messages as msgs
from wharf.cluster.queues.dead_letters import (
    DROP_HEAD,
    REJECT_PUBLISH,
    REJECT_PUBLISH_DLX,
    DeadMessage,
)


class Routing:
    """Dead-letters queue ``q`` to ``targets[q]`` (None: no DLX; missing: unknown queue), the
    reason as the copy's routing key."""

    def __init__(self, targets: dict[int, int | None]) -> None:
        self.targets = targets
        self.routed: list[DeadMessage] = []

    def dead_letters(self, queue_id: int) -> bool | None:
        if queue_id not in self.targets:
            return None
        return self.targets[queue_id] is not None

    def route(self, dead: DeadMessage) -> list[msgs.NewMessage]:
        self.routed.append(dead)
        target = self.targets.get(dead.queue_id)
        if target is None:
            return []
        return [msgs.NewMessage(target, 0, None, "dlx", dead.reason, dead.properties, dead.body)]


def new(queue_id: int, body: bytes, ttl_ms: int | None = None, overflow: str = DROP_HEAD,
        limited: bool = False) -> msgs.NewMessage:  # fmt: skip
    return msgs.NewMessage(queue_id, 0, ttl_ms, "", "q", b"", body, limited, overflow)


async def make_queue(db: Database, name: str, **limits: int) -> int:
    row, created = await defs.declare_queue(db, defs.QueueRow(0, "/", name, True, False, "",
                                                              **limits))  # fmt: skip
    assert created
    return row.id


async def rows_of(db: Database, queue_id: int) -> list[tuple[bytes, str]]:
    """(body, routing key) of the queue's rows, in queue order."""
    async with db.transaction() as tx:
        rows = await tx.fetchall(
            "SELECT body, routing_key FROM amqp_messages WHERE queue_id = %s ORDER BY seq",
            (queue_id,),
        )
    return [(bytes(r[0]), str(r[1])) for r in rows]


async def test_a_reject_deletes_the_row_and_inserts_its_copy_in_one_settlement(
    db: Database, node_lease: NodeLease
) -> None:
    work, dead = await make_queue(db, "work"), await make_queue(db, "dead")
    routing = Routing({work: dead, dead: None})
    await msgs.MessageWriter(db).publish([new(work, b"a"), new(work, b"b")])
    a, b = await msgs.claim(db, node_lease, work, 2)
    settler = msgs.Settler(db, node_lease.node_id, routing=routing)
    settler.dead_letter(node_lease.epoch, [a.seq], "rejected")
    settler.delete(node_lease.epoch, [b.seq])
    await settler.close()
    assert await rows_of(db, work) == []
    assert await rows_of(db, dead) == [(b"a", "rejected")]


async def test_a_fenced_epoch_dead_letters_nothing(db: Database, node_lease: NodeLease) -> None:
    work, dead = await make_queue(db, "work"), await make_queue(db, "dead")
    other = Membership(db, "node-b", "127.0.0.1", {},
                       MembershipSettings(heartbeat_interval=1.0, lease_duration=60.0))  # fmt: skip
    await other.register()
    stale = NodeLease.of(other)
    await msgs.MessageWriter(db).publish([new(work, b"a")])
    [a] = await msgs.claim(db, stale, work, 1)
    await other.register()  # a new epoch: the old one is over
    settler = msgs.Settler(db, stale.node_id, routing=Routing({work: dead, dead: None}))
    settler.dead_letter(stale.epoch, [a.seq], "rejected")
    await settler.close()
    assert settler.fenced == 1
    assert await rows_of(db, work) == [(b"a", "q")]
    assert await rows_of(db, dead) == []


async def test_the_sweep_dead_letters_expired_rows_drops_others_and_leaves_unknown_queues(
    db: Database, node_lease: NodeLease
) -> None:
    work, plain, unknown, dead = [await make_queue(db, n) for n in ("work", "plain", "new", "dead")]
    await msgs.MessageWriter(db).publish(
        [new(work, b"w", ttl_ms=1), new(work, b"kept"), new(plain, b"p", ttl_ms=1),
         new(unknown, b"u", ttl_ms=1)]
    )  # fmt: skip
    await asyncio.sleep(0.05)
    result = await msgs.sweep(db, node_lease, Routing({work: dead, plain: None, dead: None}))
    assert result.expired == 2
    assert await rows_of(db, work) == [(b"kept", "q")]
    assert await rows_of(db, dead) == [(b"w", "expired")]
    assert await rows_of(db, plain) == []
    assert await rows_of(db, unknown) == [(b"u", "q")]  # for a node that knows the queue


async def test_a_claim_dead_letters_the_expired_rows_of_its_queue_first(
    db: Database, node_lease: NodeLease
) -> None:
    work, dead = await make_queue(db, "work"), await make_queue(db, "dead")
    await msgs.MessageWriter(db).publish(
        [new(work, b"old", ttl_ms=1), new(work, b"fresh"), new(work, b"older", ttl_ms=1)]
    )
    await asyncio.sleep(0.05)
    claimed = await msgs.claim(db, node_lease, work, 5, routing=Routing({work: dead, dead: None}))
    assert [m.body for m in claimed] == [b"fresh"]
    assert await rows_of(db, dead) == [(b"old", "expired"), (b"older", "expired")]


async def test_drop_head_dead_letters_the_rows_it_trims(
    db: Database, node_lease: NodeLease
) -> None:
    work = await make_queue(db, "work", max_length=2)
    dead = await make_queue(db, "dead")
    writer = msgs.MessageWriter(db, Routing({work: dead, dead: None}))
    for body in (b"1", b"2", b"3", b"4"):
        assert await writer.publish([new(work, body, limited=True)])
    assert await rows_of(db, work) == [(b"3", "q"), (b"4", "q")]
    assert await rows_of(db, dead) == [(b"1", "maxlen"), (b"2", "maxlen")]


async def test_reject_publish_refuses_only_the_publishes_that_do_not_fit(
    db: Database, node_lease: NodeLease
) -> None:
    full = await make_queue(db, "full", max_length=2)
    other = await make_queue(db, "other")
    writer = msgs.MessageWriter(db)
    outcomes = await asyncio.gather(
        *(writer.publish([new(full, b"%d" % i, overflow=REJECT_PUBLISH, limited=True)])
          for i in range(4)),
        writer.publish([new(other, b"free")]),
    )  # fmt: skip
    assert outcomes == [True, True, False, False, True]
    assert writer.transactions < 5  # they shared transactions
    assert await rows_of(db, full) == [(b"0", "q"), (b"1", "q")]
    assert await rows_of(db, other) == [(b"free", "q")]
    [taken] = await msgs.claim(db, node_lease, full, 1)  # a claimed row does not count
    assert await writer.publish([new(full, b"4", overflow=REJECT_PUBLISH, limited=True)])
    assert [m.body for m in await msgs.claim(db, node_lease, full, 5)] == [b"1", b"4"]
    assert taken.body == b"0"


async def test_reject_publish_counts_bytes(db: Database, node_lease: NodeLease) -> None:
    full = await make_queue(db, "full", max_length_bytes=5)
    writer = msgs.MessageWriter(db)
    bodies = (b"abc", b"de", b"f")
    outcomes = [await writer.publish([new(full, b, overflow=REJECT_PUBLISH, limited=True)])
                for b in bodies]  # fmt: skip
    assert outcomes == [True, True, False]


async def test_reject_publish_dlx_dead_letters_the_refused_message(
    db: Database, node_lease: NodeLease
) -> None:
    full = await make_queue(db, "full", max_length=1)
    dead = await make_queue(db, "dead")
    writer = msgs.MessageWriter(db, Routing({full: dead, dead: None}))
    first = new(full, b"in", overflow=REJECT_PUBLISH_DLX, limited=True)
    second = new(full, b"out", overflow=REJECT_PUBLISH_DLX, limited=True)
    assert await asyncio.gather(writer.publish([first]), writer.publish([second])) == [True, False]
    assert await rows_of(db, full) == [(b"in", "q")]
    assert await rows_of(db, dead) == [(b"out", "maxlen")]


async def test_a_release_over_the_delivery_limit_is_dead_lettered(
    db: Database, node_lease: NodeLease
) -> None:
    work = await make_queue(db, "work", delivery_limit=0)
    dead = await make_queue(db, "dead")
    await msgs.MessageWriter(db).publish([new(work, b"x")])
    [claimed] = await msgs.claim(db, node_lease, work, 1)
    settler = msgs.Settler(db, node_lease.node_id, routing=Routing({work: dead, dead: None}))
    settler.release(node_lease.epoch, [claimed.seq], delivered=True)
    await settler.close()
    assert await rows_of(db, work) == []
    assert await rows_of(db, dead) == [(b"x", "delivery_limit")]


async def test_chained_dead_letters_stop_after_the_hop_limit(
    db: Database, node_lease: NodeLease
) -> None:
    one = await make_queue(db, "one", max_length=1)
    two = await make_queue(db, "two", max_length=1)

    class Loop(Routing):
        def route(self, dead: DeadMessage) -> list[msgs.NewMessage]:
            target = two if dead.queue_id == one else one
            return [new(target, dead.body, limited=True)]

    writer = msgs.MessageWriter(db, Loop({one: two, two: one}))
    assert await writer.publish([new(one, b"a", limited=True), new(two, b"b", limited=True)])
    async with asyncio.timeout(10):
        assert await writer.publish([new(one, b"c", limited=True)])  # ends: the hop limit
    assert len(await rows_of(db, one)) == len(await rows_of(db, two)) == 1


async def test_a_copy_that_cannot_be_inserted_leaves_the_original_in_place(
    db: Database, node_lease: NodeLease
) -> None:
    work, dead = await make_queue(db, "work"), await make_queue(db, "dead")

    class Broken(Routing):
        def route(self, dead_message: DeadMessage) -> list[msgs.NewMessage]:
            return [msgs.NewMessage(dead, 1 << 20, None, "dlx", "x", b"", dead_message.body)]

    await msgs.MessageWriter(db).publish([new(work, b"kept", ttl_ms=1)])
    await asyncio.sleep(0.05)
    with pytest.raises(DatabaseError):  # the priority does not fit the column: no commit
        await msgs.sweep(db, node_lease, Broken({work: dead, dead: None}))
    assert await rows_of(db, work) == [(b"kept", "q")]
    assert await rows_of(db, dead) == []
    result = await msgs.sweep(db, node_lease, Routing({work: dead, dead: None}))
    assert result.expired == 1
    assert await rows_of(db, dead) == [(b"kept", "expired")]
