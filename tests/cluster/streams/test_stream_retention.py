"""Retention and DeleteRecords on the real engines: the log start moves by bytes, by time and to
a requested offset with the local logs' range rules; index rows wholly below go with their
bytes and references; the data of deleted topics is released."""

from __future__ import annotations

import time
import uuid

import pytest

from helpers.stream_jobs import append, object_rows, read_all, rows, start_writer
from wharf.cluster.catalog import NodeLease, create_topic, delete_topic
from wharf.cluster.database import Database
from wharf.cluster.nodes import LeaseLostError
from wharf.cluster.objectstore import ObjectStore
from wharf.cluster.streams.leases import acquire_job_lease
from wharf.cluster.streams.retention import (
    delete_records,
    drop_deleted_topics,
    enforce_retention,
)
from wharf.errors import NotFoundError, OffsetOutOfRangeError


async def positions(db: Database, topic: uuid.UUID) -> tuple[int, int, int]:
    """(log start, next offset, bytes) of partition 0."""
    (row,) = await rows(
        db,
        "SELECT log_start_offset, next_offset, bytes FROM stream_partitions"
        " WHERE topic_id = %s AND partition = 0",
        (topic,),
    )
    return int(row[0]), int(row[1]), int(row[2])


async def batch_sizes(db: Database, topic: uuid.UUID) -> list[tuple[int, int]]:
    return [
        (int(r[0]), int(r[1]))
        for r in await rows(
            db,
            "SELECT base_offset, byte_length FROM stream_batches WHERE topic_id = %s"
            " ORDER BY base_offset",
            (topic,),
        )
    ]


async def test_retention_by_bytes_keeps_the_tail(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    topic = (await create_topic(db, node_lease, "sized", 1)).topic_id
    writer = start_writer(db, test_store, node_lease)
    for i in range(10):
        await append(writer, topic, 0, [b"%02d" % i, b"%02d" % i])
    await writer.close()
    sizes = await batch_sizes(db, topic)
    size = sizes[0][1]
    assert all(s == size for _, s in sizes)
    assert await acquire_job_lease(db, node_lease, "retention")

    removed = await enforce_retention(
        db, node_lease, topic, 0, retention_ms=None, retention_bytes=3 * size, now_ms=0
    )
    assert removed == 7
    assert await positions(db, topic) == (14, 20, 3 * size)
    assert [base for base, _ in await batch_sizes(db, topic)] == [14, 16, 18]
    assert [o for o, _ in await read_all(db, test_store, topic, 0)] == list(range(14, 20))
    refs = await object_rows(db)
    assert sorted(r[1] for r in refs.values()) == [0] * 7 + [1] * 3
    # within the limit now: nothing more moves
    assert await enforce_retention(
        db, node_lease, topic, 0, retention_ms=None, retention_bytes=3 * size, now_ms=0
    ) == 0


async def test_retention_by_time_drops_the_old_batches(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    topic = (await create_topic(db, node_lease, "aged", 1)).topic_id
    now_ms = int(time.time() * 1000)
    writer = start_writer(db, test_store, node_lease)
    for i in range(4):
        await append(writer, topic, 0, [b"old%d" % i], timestamp_ms=1_000 + i)
    for i in range(3):
        await append(writer, topic, 0, [b"new%d" % i], timestamp_ms=now_ms)
    await append(writer, topic, 0, [b"old-again"], timestamp_ms=1_000)  # kept: after a new one
    await writer.close()
    assert await acquire_job_lease(db, node_lease, "retention")
    removed = await enforce_retention(
        db, node_lease, topic, 0, retention_ms=3_600_000, retention_bytes=None, now_ms=now_ms
    )
    assert removed == 4
    assert await read_all(db, test_store, topic, 0) == [
        (4, b"new0"), (5, b"new1"), (6, b"new2"), (7, b"old-again")
    ]


async def test_retention_needs_the_job_lease(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    topic = (await create_topic(db, node_lease, "unleased", 1)).topic_id
    writer = start_writer(db, test_store, node_lease)
    await append(writer, topic, 0, [b"a"], timestamp_ms=1)
    await writer.close()
    with pytest.raises(LeaseLostError, match="retention"):
        await enforce_retention(
            db, node_lease, topic, 0, retention_ms=1, retention_bytes=None, now_ms=10_000
        )
    assert (await positions(db, topic))[0] == 0


async def test_delete_records_follows_the_local_range_rules(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    topic = (await create_topic(db, node_lease, "trim", 1)).topic_id
    writer = start_writer(db, test_store, node_lease)
    for i in range(3):
        await append(writer, topic, 0, [b"%d-a" % i, b"%d-b" % i])  # offsets 2i, 2i+1
    await writer.close()
    _, _, full = await positions(db, topic)
    size = full // 3

    assert await delete_records(db, node_lease, topic, 0, 3) == 3  # cuts the second batch
    assert await positions(db, topic) == (3, 6, 2 * size)
    assert [b for b, _ in await batch_sizes(db, topic)] == [2, 4]
    assert await read_all(db, test_store, topic, 0) == [(3, b"1-b"), (4, b"2-a"), (5, b"2-b")]
    assert await delete_records(db, node_lease, topic, 0, 1) == 3  # below the start: no move
    assert await delete_records(db, node_lease, topic, 0, 3) == 3
    with pytest.raises(OffsetOutOfRangeError):
        await delete_records(db, node_lease, topic, 0, 7)
    with pytest.raises(OffsetOutOfRangeError):
        await delete_records(db, node_lease, topic, 0, -2)
    with pytest.raises(NotFoundError):
        await delete_records(db, node_lease, topic, 1, 0)
    assert await delete_records(db, node_lease, topic, 0, -1) == 6  # the high watermark
    assert await positions(db, topic) == (6, 6, 0)
    assert await batch_sizes(db, topic) == []
    assert all(refs == 0 for _, refs, _ in (await object_rows(db)).values())


async def test_the_rows_of_a_deleted_topic_are_released(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    gone = (await create_topic(db, node_lease, "gone", 2)).topic_id
    kept = (await create_topic(db, node_lease, "kept", 1)).topic_id
    writer = start_writer(db, test_store, node_lease)
    for i in range(4):
        await append(writer, gone, i % 2, [b"g%d" % i])
    await append(writer, kept, 0, [b"k"])
    await writer.close()
    await delete_topic(db, node_lease, "gone")
    assert await acquire_job_lease(db, node_lease, "retention")
    assert await drop_deleted_topics(db, node_lease) == 4
    left = await rows(db, "SELECT topic_id FROM stream_batches")
    assert left == [(kept,)]
    assert sorted(refs for _, refs, _ in (await object_rows(db)).values()) == [0, 0, 0, 0, 1]
