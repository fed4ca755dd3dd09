"""Large AMQP bodies in the object store, at the SQL and store level: written before the
publish transaction and named by its rows, shared by the rows of one publish, deleted only once
no row names them, orphans of failed publishes collected, every step fenced."""

from __future__ import annotations

import asyncio

import pytest

from wharf.cluster.catalog import NodeLease
from wharf.cluster.database import Database, DatabaseError
from wharf.cluster.nodes import LeaseLostError
from wharf.cluster.objectstore import ObjectStore
from wharf.cluster.queues import bodies as bodies_module
from wharf.cluster.queues import definitions as defs
from wharf.cluster.queues import messages as msgs
from wharf.cluster.queues.bodies import (
    BODY_PREFIX,
    Bodies,
    ListingCursor,
    collect_bodies,
    register_keys,
)
from wharf.errors import StorageError

THRESHOLD = 1024
BIG = bytes(range(256)) * 16  # 4 KiB, above THRESHOLD


def new(queue_id: int, body: bytes) -> msgs.NewMessage:
    return msgs.NewMessage(queue_id, 0, None, "", "q", b"", body)


async def make_queue(db: Database, name: str) -> int:
    row, created = await defs.declare_queue(db, defs.QueueRow(0, "/", name, True, False, ""))
    assert created
    return row.id


async def stored(store: ObjectStore) -> list[str]:
    return [info.key for info in await store.list(BODY_PREFIX)]


async def rows_named(db: Database) -> list[tuple[str | None, int | None, bytes]]:
    async with db.transaction() as tx:
        rows = await tx.fetchall(
            "SELECT body_key, body_size, body FROM amqp_messages ORDER BY seq"
        )
    return [(r[0], r[1], bytes(r[2])) for r in rows]


async def test_a_large_body_is_one_object_shared_by_the_rows_of_its_publish(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    one, two = await make_queue(db, "one"), await make_queue(db, "two")
    writer = msgs.MessageWriter(db, bodies=Bodies(test_store, THRESHOLD))
    await writer.publish([new(one, BIG), new(two, BIG)])
    await writer.publish([new(one, b"small")])
    [key] = await stored(test_store)
    assert await rows_named(db) == [
        (key, len(BIG), b""), (key, len(BIG), b""), (None, None, b"small"),
    ]  # fmt: skip
    claimed = await msgs.claim(db, node_lease, one, 10)
    assert [(m.body_key, m.body) for m in claimed] == [(key, b""), (None, b"small")]
    assert await Bodies(test_store, THRESHOLD).fetch([key]) == {key: BIG}


async def test_a_body_object_is_deleted_only_once_no_row_names_it(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    one, two = await make_queue(db, "one"), await make_queue(db, "two")
    await msgs.MessageWriter(db, bodies=Bodies(test_store, THRESHOLD)).publish(
        [new(one, BIG), new(two, BIG)]
    )
    [key] = await stored(test_store)
    settler = msgs.Settler(db, node_lease.node_id)
    first = await msgs.claim(db, node_lease, one, 1)
    settler.delete(node_lease.epoch, [m.seq for m in first])
    await settler.close()
    done = await collect_bodies(db, test_store, node_lease, 3600)
    assert done.ran and done.deleted == 0
    assert await stored(test_store) == [key]  # the row of queue "two" still names it
    second = await msgs.claim(db, node_lease, two, 1)
    settler = msgs.Settler(db, node_lease.node_id)
    settler.delete(node_lease.epoch, [m.seq for m in second])
    await settler.close()
    done = await collect_bodies(db, test_store, node_lease, 3600)
    assert done.deleted == 1
    assert await stored(test_store) == []
    async with db.transaction() as tx:
        assert await tx.fetchval("SELECT count(*) FROM amqp_bodies") == 0


async def test_bodies_commit_in_publish_order(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    queue = await make_queue(db, "q")
    writer = msgs.MessageWriter(db, bodies=Bodies(test_store, THRESHOLD))
    bodies = [BIG + b"%d" % i if i % 3 == 0 else b"%d" % i for i in range(12)]
    await asyncio.gather(*(writer.publish([new(queue, body)]) for body in bodies))
    claimed = await msgs.claim(db, node_lease, queue, 20)
    fetched = await Bodies(test_store, THRESHOLD).fetch(
        m.body_key for m in claimed if m.body_key is not None
    )
    assert [fetched[m.body_key] if m.body_key else m.body for m in claimed] == bodies


async def test_a_failed_put_fails_only_its_own_publish(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    queue = await make_queue(db, "q")
    bodies = Bodies(test_store, THRESHOLD)
    writer = msgs.MessageWriter(db, bodies=bodies)

    async def refuse(body: bytes) -> str:
        raise StorageError("the object store refused it")

    bodies.put = refuse  # type: ignore[method-assign]
    before = writer.publish([new(queue, b"before")])
    big = writer.publish([new(queue, BIG)])
    after = writer.publish([new(queue, b"after")])
    await before
    with pytest.raises(StorageError, match="refused"):
        await big
    await after
    claimed = await msgs.claim(db, node_lease, queue, 10)
    assert [m.body for m in claimed] == [b"before", b"after"]


async def test_orphans_are_collected_and_a_late_publish_of_one_fails(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    queue = await make_queue(db, "q")
    bodies = Bodies(test_store, THRESHOLD)
    orphan = await bodies.put(BIG)  # PUT, then the publish transaction never committed
    await msgs.MessageWriter(db, bodies=bodies).publish([new(queue, BIG)])
    [kept] = [key for key in await stored(test_store) if key != orphan]
    young = await collect_bodies(db, test_store, node_lease, 3600)
    assert young.orphans == 0 and sorted(await stored(test_store)) == sorted([orphan, kept])
    done = await collect_bodies(db, test_store, node_lease, 0)
    assert done.orphans == 1
    assert await stored(test_store) == [kept]  # the committed one stays
    with pytest.raises(DatabaseError):  # its publish, committing now, must not succeed
        async with db.transaction() as tx:
            await register_keys(tx, [orphan])


async def test_a_stale_lease_collects_nothing(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    bodies = Bodies(test_store, THRESHOLD)
    orphan = await bodies.put(BIG)
    async with db.transaction() as tx:
        await tx.execute(
            "UPDATE nodes SET lease_expires_at = clock_timestamp() - interval '1 second'"
        )
    with pytest.raises(LeaseLostError):
        await collect_bodies(db, test_store, node_lease, 0)
    assert await stored(test_store) == [orphan]


async def test_publishes_acks_and_the_collector_interleaved_never_lose_a_named_body(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    one, two = await make_queue(db, "one"), await make_queue(db, "two")
    writer = msgs.MessageWriter(db, bodies=Bodies(test_store, THRESHOLD))
    settler = msgs.Settler(db, node_lease.node_id)
    stop = asyncio.Event()

    async def publish() -> None:
        for i in range(30):
            await writer.publish([new(one, BIG + b"%d" % i), new(two, BIG + b"%d" % i)])
        stop.set()

    async def ready() -> int:
        return await msgs.ready_count(db, one) + await msgs.ready_count(db, two)

    async def consume() -> None:
        while not stop.is_set() or await ready():
            for queue in (one, two):
                claimed = await msgs.claim(db, node_lease, queue, 3)
                settler.delete(node_lease.epoch, [m.seq for m in claimed])
            await asyncio.sleep(0)

    async def collect() -> None:
        while not stop.is_set():
            await collect_bodies(db, test_store, node_lease, 3600)
            async with db.transaction() as tx:
                named = {
                    str(r[0])
                    for r in await tx.fetchall(
                        "SELECT body_key FROM amqp_messages WHERE body_key IS NOT NULL"
                    )
                }
            assert named <= set(await stored(test_store))  # every named body is there

    await asyncio.gather(publish(), consume(), collect())
    await settler.close()
    await collect_bodies(db, test_store, node_lease, 3600)
    assert await stored(test_store) == []


async def test_a_paged_orphan_sweep_lists_a_page_per_round(
    db: Database, node_lease: NodeLease, test_store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bodies_module, "LISTING_PAGE", 2)
    bodies = Bodies(test_store, THRESHOLD)
    orphans = sorted([await bodies.put(BIG) for _ in range(5)])
    cursor = ListingCursor()
    swept = []
    for _ in range(3):
        swept.append((await collect_bodies(db, test_store, node_lease, 0, cursor)).orphans)
        assert cursor.after in (None, *orphans)
    assert swept == [2, 2, 1]
    assert cursor.after is None  # past the end: the next round starts again
    assert await stored(test_store) == []
