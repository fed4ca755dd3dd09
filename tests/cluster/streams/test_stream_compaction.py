"""Compaction on the real engines: a partition's batches from many intake objects become one
object of its own with every record at its offset (base offsets written in, CRCs intact), a
consumer reading meanwhile sees the same records, and a compaction that races retention rolls
back, leaving the index as retention left it."""

from __future__ import annotations

import asyncio

import pytest

from helpers.stream_jobs import (
    append,
    index_keys,
    object_rows,
    read_all,
    register,
    rows,
    start_writer,
    stored_keys,
)
from wharf.cluster.catalog import NodeLease, create_topic
from wharf.cluster.database import Database
from wharf.cluster.objectstore import ObjectStore
from wharf.cluster.streams import compactor
from wharf.cluster.streams.compactor import (
    CompactionSettings,
    apply_compaction,
    compact,
    plan_compaction,
)
from wharf.cluster.streams.gc import GcSettings, sweep_orphans
from wharf.cluster.streams.leases import acquire_job_lease
from wharf.cluster.streams.objects import decode_footer
from wharf.cluster.streams.retention import delete_records
from wharf.errors import CorruptBatchError
from wharf.storage.record_batch import iter_batches

BOUND_S = 60.0
NOW = CompactionSettings(compact_after=0.0, min_batches=4)


async def test_compaction_keeps_every_record_at_its_offset(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    topic = (await create_topic(db, node_lease, "compacted", 2)).topic_id
    writer = start_writer(db, test_store, node_lease)
    for i in range(12):
        await append(writer, topic, i % 2, [b"v%d-%d" % (i, n) for n in range(1 + i % 3)])
    await writer.close()
    before = {p: await read_all(db, test_store, topic, p) for p in (0, 1)}
    intake = await index_keys(db)
    assert len(intake) == 12

    assert await acquire_job_lease(db, node_lease, "compactor")
    async with asyncio.timeout(BOUND_S):
        assert await compact(db, test_store, node_lease, NOW) == 2

    assert {p: await read_all(db, test_store, topic, p) for p in (0, 1)} == before
    compacted = await index_keys(db)
    assert len(compacted) == 2
    assert all(key.startswith(f"p/{topic}/") for key in compacted)
    objects = await object_rows(db)
    for key in intake:
        assert objects[key] == ("intake", 0, "live")  # left to the collector
    index = await rows(
        db, "SELECT object_key, base_offset, byte_start, byte_length FROM stream_batches"
    )
    for key in compacted:
        mine = sorted((r[2], r[1], r[3]) for r in index if r[0] == key)
        assert objects[key] == ("partition", len(mine), "live")
        data = await test_store.get(key)
        (section,) = decode_footer(data)
        assert section.partition == int(key.split("/")[2])
        stored = [(at, header.base_offset, header.size) for at, header in iter_batches(
            data[: section.length]
        )]  # iter_batches checks every CRC
        assert stored == mine  # final base offsets written into the batches
    # a second round finds nothing left to compact
    assert await compact(db, test_store, node_lease, NOW) == 0


async def test_a_round_goes_on_while_a_partition_has_more_than_one_object_s_worth(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    """A round passes over the partitions again while it compacts something, so a partition
    with more than ``max_object_bytes`` in intake objects is caught up in one round, paced at
    ``max_bytes_per_second`` (its GETs and PUTs average no faster)."""
    topic = (await create_topic(db, node_lease, "backlog", 1)).topic_id
    writer = start_writer(db, test_store, node_lease)
    for i in range(24):
        await append(writer, topic, 0, [b"x%03d" % i + b"." * 2000])
    await writer.close()
    before = await read_all(db, test_store, topic, 0)
    assert await acquire_job_lease(db, node_lease, "compactor")
    rate = 100_000.0  # bytes a second: the round's ~100 KB of GETs and PUTs take about 1 s
    settings = CompactionSettings(
        compact_after=0.0, min_batches=2, max_object_bytes=16_000, small_object_bytes=0,
        max_bytes_per_second=rate,
    )  # fmt: skip
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(BOUND_S):
        done = await compact(db, test_store, node_lease, settings)
    elapsed = loop.time() - started
    keys = await index_keys(db)
    assert done == len(keys) >= 3  # 24 batches of ~2 KB, at most 16 KB an object
    assert all(key.startswith(f"p/{topic}/") for key in keys)
    assert await read_all(db, test_store, topic, 0) == before
    ((written,),) = await rows(
        db, "SELECT sum(size) FROM stream_objects WHERE kind = 'partition'"
    )  # and about as many bytes read from the intake objects
    moved = 2 * int(written)
    assert moved / elapsed <= rate * 1.05
    assert await compact(db, test_store, node_lease, settings) == 0


async def test_a_round_stops_taking_partitions_when_its_time_is_up(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    topic = (await create_topic(db, node_lease, "late", 1)).topic_id
    writer = start_writer(db, test_store, node_lease)
    for i in range(4):
        await append(writer, topic, 0, [b"r%d" % i])
    await writer.close()
    assert await acquire_job_lease(db, node_lease, "compactor")
    no_time = CompactionSettings(compact_after=0.0, min_batches=2, round_seconds=0.0)
    assert await compact(db, test_store, node_lease, no_time) == 0
    assert len(await index_keys(db)) == 4  # left for the next round
    assert await compact(db, test_store, node_lease, NOW) == 1


async def test_small_compacted_objects_are_merged_again(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    topic = (await create_topic(db, node_lease, "trickle", 1)).topic_id
    assert await acquire_job_lease(db, node_lease, "compactor")
    intake_only = CompactionSettings(compact_after=0.0, min_batches=4, small_object_bytes=0)
    for round_ in range(2):  # two rounds that compact only intake: two small objects
        writer = start_writer(db, test_store, node_lease)
        for i in range(4):
            await append(writer, topic, 0, [b"r%d-%d" % (round_, i)])
        await writer.close()
        async with asyncio.timeout(BOUND_S):
            assert await compact(db, test_store, node_lease, intake_only) == 1
    before = await read_all(db, test_store, topic, 0)
    assert [offset for offset, _ in before] == list(range(8))
    first_two = await index_keys(db)
    assert len(first_two) == 2 and all(k.startswith(f"p/{topic}/") for k in first_two)
    async with asyncio.timeout(BOUND_S):
        assert await compact(db, test_store, node_lease, NOW) == 1  # the two small ones
    (merged,) = await index_keys(db)
    assert merged not in first_two
    assert await read_all(db, test_store, topic, 0) == before
    # one object, however small, is left alone: nothing to merge it with
    assert await compact(db, test_store, node_lease, NOW) == 0


async def test_a_consumer_reading_during_compaction_sees_the_same_records(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    topic = (await create_topic(db, node_lease, "busy", 1)).topic_id
    writer = start_writer(db, test_store, node_lease)
    for i in range(30):
        await append(writer, topic, 0, [b"r%d" % i, b"s%d" % i])
    await writer.close()
    expected = await read_all(db, test_store, topic, 0)
    assert [offset for offset, _ in expected] == list(range(60))
    assert await acquire_job_lease(db, node_lease, "compactor")
    done = asyncio.Event()
    reads: list[list[tuple[int, bytes | None]]] = []

    async def consume() -> None:
        while not done.is_set():
            reads.append(await read_all(db, test_store, topic, 0))
        reads.append(await read_all(db, test_store, topic, 0))

    async with asyncio.timeout(BOUND_S):
        consumer = asyncio.create_task(consume())
        await asyncio.sleep(0)
        assert await compact(db, test_store, node_lease, CompactionSettings(0.0, 4)) == 1
        done.set()
        await consumer
    assert len(reads) >= 2
    assert all(read == expected for read in reads)


async def test_a_compaction_lets_the_event_loop_run_while_it_builds_its_object(
    db: Database, node_lease: NodeLease, test_store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Checking and copying a partition's batches into one object took hundreds of ms on
    the event loop in a benchmark: every client of the node (AMQP deliveries, fetches)
    waited for it. Now it yields every ``BUILD_SLICE`` bytes."""
    topic = (await create_topic(db, node_lease, "sliced", 1)).topic_id
    writer = start_writer(db, test_store, node_lease)
    for i in range(4):
        await append(writer, topic, 0, [b"y%d" % i])
    await writer.close()
    ticks = 0
    seen: list[int] = []  # the ticks counted when each batch was checked

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    def check(batch: memoryview, row: object) -> None:
        seen.append(ticks)
        real_check(batch, row)

    real_check = compactor._check
    monkeypatch.setattr(compactor, "_check", check)
    monkeypatch.setattr(compactor, "BUILD_SLICE", 1)
    assert await acquire_job_lease(db, node_lease, "compactor")
    running = asyncio.create_task(ticker())
    try:
        plan = await plan_compaction(db, test_store, topic, 0, NOW)
    finally:
        running.cancel()
    assert plan is not None and len(plan.rows) == 4
    assert len(seen) == 4 and seen == sorted(set(seen))  # the loop ran between batches
    assert await apply_compaction(db, test_store, node_lease, plan)
    assert await read_all(db, test_store, topic, 0) == [(i, b"y%d" % i) for i in range(4)]


async def test_a_compaction_reads_a_bounded_number_of_objects_at_a_time(
    db: Database, node_lease: NodeLease, test_store: ObjectStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A slow partition leaves one small intake object per flush: a compaction gathering
    them must not send a GET for each at once."""
    topic = (await create_topic(db, node_lease, "many", 1)).topic_id
    writer = start_writer(db, test_store, node_lease)
    for i in range(12):
        await append(writer, topic, 0, [b"z%d" % i])
    await writer.close()
    monkeypatch.setattr(compactor, "READS_IN_FLIGHT", 3)
    in_flight = most = 0
    real_get_range = test_store.get_range

    async def get_range(key: str, start: int, length: int) -> bytes:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await real_get_range(key, start, length)
        finally:
            in_flight -= 1

    monkeypatch.setattr(test_store, "get_range", get_range)
    plan = await plan_compaction(db, test_store, topic, 0, NOW)
    assert plan is not None and len({r.object_key for r in plan.rows}) == 12
    assert most == 3


async def test_a_source_object_cut_short_stops_the_compaction(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    """An intake object that no longer holds the batch its index row names (cut short) is
    corruption to report, not bytes to copy: nothing is planned, nothing changes."""
    topic = (await create_topic(db, node_lease, "cut", 1)).topic_id
    writer = start_writer(db, test_store, node_lease)
    for i in range(4):
        await append(writer, topic, 0, [b"z%d" % i])
    await writer.close()
    [(key, end)] = await rows(
        db, "SELECT object_key, byte_start + byte_length FROM stream_batches"
        " WHERE base_offset = 3"
    )  # fmt: skip
    whole = await test_store.get(key)
    await test_store.put(key, whole[: end - 10])
    index_before = await rows(db, "SELECT * FROM stream_batches ORDER BY base_offset")
    assert await acquire_job_lease(db, node_lease, "compactor")
    with pytest.raises(CorruptBatchError, match=key):
        await plan_compaction(db, test_store, topic, 0, NOW)
    assert await rows(db, "SELECT * FROM stream_batches ORDER BY base_offset") == index_before


async def test_compaction_racing_retention_rolls_back(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    topic = (await create_topic(db, node_lease, "raced", 1)).topic_id
    writer = start_writer(db, test_store, node_lease)
    for i in range(6):
        await append(writer, topic, 0, [b"x%d" % i])
    await writer.close()
    assert await acquire_job_lease(db, node_lease, "compactor")
    plan = await plan_compaction(db, test_store, topic, 0, NOW)
    assert plan is not None and len(plan.rows) == 6

    assert await delete_records(db, node_lease, topic, 0, 2) == 2  # retention wins the race
    index_before = await rows(db, "SELECT * FROM stream_batches ORDER BY base_offset")
    objects_before = await object_rows(db)

    assert not await apply_compaction(db, test_store, node_lease, plan)
    assert await rows(db, "SELECT * FROM stream_batches ORDER BY base_offset") == index_before
    assert await object_rows(db) == objects_before  # no row for the compacted object
    assert await read_all(db, test_store, topic, 0) == [(i, b"x%d" % i) for i in range(2, 6)]
    # the unused object is an orphan, which the sweep removes
    assert plan.key in await stored_keys(test_store)
    assert await acquire_job_lease(db, node_lease, "orphans")
    swept = await sweep_orphans(db, test_store, node_lease, GcSettings(orphan_grace=0.0))
    assert swept == [plan.key]
    assert plan.key not in await stored_keys(test_store)


async def test_a_compacted_partition_is_read_from_another_node(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    topic = (await create_topic(db, node_lease, "shared", 1)).topic_id
    _, other = await register(db, "node-b")
    writers = [start_writer(db, test_store, node_lease), start_writer(db, test_store, other)]
    for i in range(8):
        await append(writers[i % 2], topic, 0, [b"n%d" % i])
    for writer in writers:
        await writer.close()
    expected = await read_all(db, test_store, topic, 0)
    assert await acquire_job_lease(db, other, "compactor")
    assert await compact(db, test_store, other, NOW) == 1
    assert await read_all(db, test_store, topic, 0) == expected
    # and later appends land after the compacted run as usual
    writer = start_writer(db, test_store, node_lease)
    assert (await append(writer, topic, 0, [b"after"])).base_offset == 8
    await writer.close()
    assert (await read_all(db, test_store, topic, 0))[-1] == (8, b"after")
