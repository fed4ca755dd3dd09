"""Garbage collection on the real engines: unreferenced objects go after their grace, referenced
ones never (also under random interleavings of produce, compaction, DeleteRecords and the
collector); the orphan sweep claims unnamed keys before deleting them, so a flush committing
such a key late loses; its marker rows are purged after their time."""

from __future__ import annotations

import asyncio
import random
import uuid

import pytest

from helpers.stream_jobs import (
    append,
    index_keys,
    object_rows,
    read_all,
    rows,
    start_writer,
    stored_keys,
)
from wharf.cluster.catalog import NodeLease, create_topic
from wharf.cluster.database import Database, DatabaseError
from wharf.cluster.objectstore import ObjectStore
from wharf.cluster.streams.commit import FlushPlan, commit_flush
from wharf.cluster.streams.compactor import CompactionSettings, compact
from wharf.cluster.streams.gc import GcSettings, SweepCursor, collect_garbage, sweep_orphans
from wharf.cluster.streams.leases import acquire_job_lease
from wharf.cluster.streams.retention import delete_records

BOUND_S = 120.0
NOW = GcSettings(gc_grace=0.0, orphan_grace=0.0)


async def hold_all(db: Database, lease: NodeLease) -> None:
    for job in ("compactor", "gc", "orphans"):
        assert await acquire_job_lease(db, lease, job)


async def test_unreferenced_objects_go_after_their_grace(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    topic = (await create_topic(db, node_lease, "collected", 1)).topic_id
    writer = start_writer(db, test_store, node_lease)
    for i in range(4):
        await append(writer, topic, 0, [b"c%d" % i])
    await writer.close()
    await hold_all(db, node_lease)
    keys = await index_keys(db)
    assert await collect_garbage(db, test_store, node_lease, NOW) == []  # all referenced

    await delete_records(db, node_lease, topic, 0, 2)
    released = keys - await index_keys(db)
    assert len(released) == 2
    waiting = GcSettings(gc_grace=3600.0)
    assert await collect_garbage(db, test_store, node_lease, waiting) == []
    assert released <= await stored_keys(test_store)

    assert set(await collect_garbage(db, test_store, node_lease, NOW)) == released
    assert await stored_keys(test_store) == keys - released
    assert set(await object_rows(db)) == keys - released
    assert await read_all(db, test_store, topic, 0) == [(2, b"c2"), (3, b"c3")]


async def test_a_claim_left_unfinished_is_finished_by_a_later_round(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    topic = (await create_topic(db, node_lease, "crashed", 1)).topic_id
    writer = start_writer(db, test_store, node_lease)
    await append(writer, topic, 0, [b"x"])
    await writer.close()
    await hold_all(db, node_lease)
    (key,) = await index_keys(db)
    await delete_records(db, node_lease, topic, 0, -1)
    async with db.transaction() as tx:  # a collector that died after its claim
        await tx.execute(
            "UPDATE stream_objects SET state = 'deleting', deleting_since = clock_timestamp()"
            " WHERE key = %s",
            (key,),
        )
    assert await collect_garbage(db, test_store, node_lease, NOW) == [key]
    assert await stored_keys(test_store) == set()
    assert await object_rows(db) == {}


async def test_the_collector_never_deletes_a_referenced_object(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    """Random interleavings: produce, compact, DeleteRecords and collect run together in
    random groups; after each group every index row's object is in the store with a live row,
    and every record above the log start reads back at its offset."""
    topic = (await create_topic(db, node_lease, "raced", 2)).topic_id
    await hold_all(db, node_lease)
    writer = start_writer(db, test_store, node_lease)
    rng = random.Random(20261205)
    produced: dict[int, dict[int, bytes]] = {0: {}, 1: {}}
    counter = 0

    async def produce() -> None:
        nonlocal counter
        partition = rng.randrange(2)
        values = [b"%d" % (counter + n) for n in range(rng.randint(1, 3))]
        counter += len(values)
        answer = await append(writer, topic, partition, values)
        for n, value in enumerate(values):
            produced[partition][answer.base_offset + n] = value

    async def trim() -> None:
        partition = rng.randrange(2)
        high = max(produced[partition], default=-1) + 1
        await delete_records(db, node_lease, topic, partition, rng.randint(0, high))

    async def compaction() -> None:
        await compact(db, test_store, node_lease, CompactionSettings(0.0, 2))

    async def collect() -> None:
        await collect_garbage(db, test_store, node_lease, NOW)

    operations = [produce, produce, produce, trim, compaction, collect, collect]
    async with asyncio.timeout(BOUND_S):
        for _ in range(25):
            group = [rng.choice(operations) for _ in range(rng.randint(2, 4))]
            await asyncio.gather(*(op() for op in group))
            referenced = await index_keys(db)
            assert referenced <= await stored_keys(test_store)
            objects = await object_rows(db)
            assert all(objects[key][2] == "live" for key in referenced)
            starts = dict(
                await rows(
                    db,
                    "SELECT partition, log_start_offset FROM stream_partitions"
                    " WHERE topic_id = %s",
                    (topic,),
                )
            )
            for partition in (0, 1):
                expected = sorted(
                    (o, v) for o, v in produced[partition].items() if o >= starts[partition]
                )
                assert await read_all(db, test_store, topic, partition) == expected
    await writer.close()
    counts = await rows(
        db,
        "SELECT o.key, o.refs, count(b.object_key) FROM stream_objects o"
        " LEFT JOIN stream_batches b ON b.object_key = o.key GROUP BY o.key, o.refs",
    )
    assert all(int(refs) == int(n) for _, refs, n in counts)  # the counts are exact


async def test_the_orphan_sweep_claims_keys_before_deleting_them(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    topic = (await create_topic(db, node_lease, "swept", 1)).topic_id
    writer = start_writer(db, test_store, node_lease)
    await append(writer, topic, 0, [b"kept"])
    await writer.close()
    (live,) = await index_keys(db)
    orphan = f"intake/{node_lease.node_id}/{uuid.uuid4()}"
    stray = f"p/{topic}/0/0-{uuid.uuid4()}"
    other = "elsewhere/not-ours"
    for key in (orphan, stray, other):
        await test_store.put(key, b"never committed")
    await hold_all(db, node_lease)

    assert await sweep_orphans(db, test_store, node_lease, GcSettings()) == []  # too young
    assert await sweep_orphans(db, test_store, node_lease, NOW) == sorted([orphan, stray])
    assert await stored_keys(test_store) == {live, other}
    markers = await object_rows(db)
    assert markers[orphan] == ("intake", 0, "deleting")
    assert markers[stray] == ("partition", 0, "deleting")
    assert markers[live] == ("intake", 1, "live")

    # a flush that commits the claimed key late loses on it: nothing is indexed
    late = FlushPlan(uuid.uuid4(), orphan, 15, [])
    with pytest.raises(DatabaseError, match="claimed for deletion"):
        await commit_flush(db, node_lease, late)
    assert await index_keys(db) == {live}

    # a sweep that died after marking deletes the object again when it is listed again
    await test_store.put(orphan, b"put back")
    assert await sweep_orphans(db, test_store, node_lease, NOW) == [orphan]
    assert orphan not in await stored_keys(test_store)

    kept_markers = GcSettings(orphan_grace=0.0, deleting_kept=3600.0)
    await sweep_orphans(db, test_store, node_lease, kept_markers)
    assert {orphan, stray} <= set(await object_rows(db))
    purge = GcSettings(orphan_grace=0.0, deleting_kept=0.0)
    await sweep_orphans(db, test_store, node_lease, purge)
    assert set(await object_rows(db)) == {live}
    assert await read_all(db, test_store, topic, 0) == [(0, b"kept")]


async def test_a_paged_sweep_covers_every_key_a_page_at_a_time(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    topic = (await create_topic(db, node_lease, "paged", 1)).topic_id
    orphans = sorted(
        [f"intake/{node_lease.node_id}/{uuid.uuid4()}" for _ in range(5)]
        + [f"p/{topic}/0/0-{uuid.uuid4()}" for _ in range(2)]
    )
    for key in orphans:
        await test_store.put(key, b"never committed")
    await hold_all(db, node_lease)
    cursor = SweepCursor()
    paged = GcSettings(orphan_grace=0.0, sweep_page=3)
    pages = [await sweep_orphans(db, test_store, node_lease, paged, cursor) for _ in range(3)]
    assert pages == [orphans[0:3], orphans[3:6], orphans[6:7]]
    assert cursor == SweepCursor()  # past the last prefix's end: back to the start
    assert await stored_keys(test_store) == set()
