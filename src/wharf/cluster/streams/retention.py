"""Moving a cluster partition's log start: DeleteRecords, retention, and the data of deleted
topics (docs/cluster.md, "Compaction, retention, garbage collection").

How it works. Each move is one transaction under the partition's row lock (``FOR UPDATE``, the
lock a flush and a compaction take too): the new log start is decided, ``log_start_offset``
moves up to it, the index rows wholly below it are deleted, the partition's byte count drops by
theirs, and their objects' reference counts fall (:func:`~wharf.cluster.streams.refs.release_refs`;
objects left at zero wait for the garbage collector). The log start may fall inside a batch:
that batch stays, and fetches below the log start are out of range.

- :func:`delete_records` (Kafka's DeleteRecords, any node, fenced on the node's lease): the
  requested offset, -1 meaning the high watermark, with the local logs' range rule
  (:func:`~wharf.storage.retention.moves_log_start`): at or below the log start nothing moves,
  past the log end it is out of range. Other nodes hear of it through a ``wharf_catalog``
  notification in the same transaction, so their cached log starts follow.
- :func:`enforce_retention` (the ``retention`` job, fenced on the node's lease and the job's):
  the local logs' rule too (:func:`~wharf.storage.retention.segments_past_retention`) with each
  index row in the place of a segment: the oldest batches go while one is older than
  ``retention.ms`` by its ``max_timestamp``, or the partition without it still holds
  ``retention.bytes`` (the partition's size is its row's byte count, which flushes and moves
  keep: no run sums the index). At most :data:`ROWS_PER_MOVE` rows are weighed per
  transaction; the function loops until a move stops short.
- :func:`drop_deleted_topics` (the ``retention`` job): the index rows of deleted topics go, in
  chunks, releasing their objects.
"""

from __future__ import annotations

import uuid
from typing import Any, NamedTuple

from wharf.cluster.catalog import CHANNEL, NodeLease, check_lease
from wharf.cluster.database import Database, Transaction
from wharf.cluster.streams.leases import check_job_lease
from wharf.cluster.streams.refs import release_refs
from wharf.errors import NotFoundError, OffsetOutOfRangeError
from wharf.storage.log import LogConfig
from wharf.storage.retention import moves_log_start, segments_past_retention

__all__ = ["ROWS_PER_MOVE", "delete_records", "drop_deleted_topics", "enforce_retention"]

ROWS_PER_MOVE = 1000
_RETRIES = 5
HIGH_WATERMARK = -1


class _Locked(NamedTuple):
    name: str
    log_start_offset: int
    next_offset: int
    bytes: int
    """The byte length of the partition's index rows (kept by every flush and move)."""


class _Row(NamedTuple):
    """An index row as the retention rule weighs it (in the place of a segment)."""

    last_offset: int
    size: int
    max_timestamp: int


async def delete_records(
    db: Database, lease: NodeLease, topic_id: uuid.UUID, partition: int, offset: int
) -> int:
    """Hide the records below ``offset`` (-1: the high watermark); returns the log start.
    ``OffsetOutOfRangeError`` for an offset past the log end (or below -1),
    ``NotFoundError`` for a partition the catalogue does not have (or of a deleted topic),
    ``LeaseLostError`` when the node's lease is over."""

    async def body(tx: Transaction) -> int:
        await check_lease(tx, lease, db.name)
        locked = await _lock(tx, topic_id, partition)
        target = locked.next_offset if offset == HIGH_WATERMARK else offset
        if target < 0:
            raise OffsetOutOfRangeError(
                f"cannot delete records before {offset}: the high watermark is "
                f"{locked.next_offset}"
            )
        if not moves_log_start(target, locked.log_start_offset, locked.next_offset):
            return locked.log_start_offset
        await _truncate(tx, topic_id, partition, target)
        await tx.execute("SELECT pg_notify(%s, %s)", (CHANNEL, locked.name))
        return target

    return await db.run(body, "streams.delete_records", retries=_RETRIES)


async def enforce_retention(
    db: Database,
    lease: NodeLease,
    topic_id: uuid.UUID,
    partition: int,
    *,
    retention_ms: int | None,
    retention_bytes: int | None,
    now_ms: int,
) -> int:
    """Move the partition's log start past the batches its retention limits delete; returns
    how many index rows went. ``LeaseLostError`` when this node does not hold the
    ``retention`` job (or its own lease); a partition gone meanwhile moves nothing."""
    if retention_ms is None and retention_bytes is None:
        return 0
    config = LogConfig(retention_ms=retention_ms, retention_bytes=retention_bytes)

    async def body(tx: Transaction) -> tuple[int, bool]:
        await check_job_lease(tx, lease, "retention", db.name)
        try:
            locked = await _lock(tx, topic_id, partition)
        except NotFoundError:
            return 0, False
        rows = [
            _Row(int(r[0]), int(r[1]), int(r[2]))
            for r in await tx.fetchall(
                "SELECT last_offset, byte_length, max_timestamp FROM stream_batches"
                " WHERE topic_id = %s AND partition = %s ORDER BY base_offset LIMIT %s",
                (topic_id, partition, ROWS_PER_MOVE),
            )
        ]
        doomed = segments_past_retention(rows, locked.bytes, config, now_ms)
        if doomed == 0:
            return 0, False
        gone = await _truncate(tx, topic_id, partition, rows[doomed - 1].last_offset + 1)
        return gone, doomed == ROWS_PER_MOVE

    removed = 0
    while True:
        gone, more = await db.run(body, "streams.retention", retries=_RETRIES)
        removed += gone
        if not more:
            return removed


async def drop_deleted_topics(db: Database, lease: NodeLease) -> int:
    """Delete the index rows of deleted topics (releasing their objects); returns how many
    went. Fenced on the ``retention`` job."""

    async def body(tx: Transaction) -> int:
        await check_job_lease(tx, lease, "retention", db.name)
        keys = [
            str(r[0])
            for r in await tx.fetchall(
                "DELETE FROM stream_batches WHERE (topic_id, partition, base_offset) IN ("
                "   SELECT b.topic_id, b.partition, b.base_offset"
                "     FROM stream_batches b JOIN stream_topics t USING (topic_id)"
                "    WHERE t.deleted_at IS NOT NULL LIMIT %s)"
                " RETURNING object_key",
                (ROWS_PER_MOVE,),
            )
        ]
        await release_refs(tx, keys)
        return len(keys)

    removed = 0
    while True:
        gone = await db.run(body, "streams.drop_deleted", retries=_RETRIES)
        removed += gone
        if gone < ROWS_PER_MOVE:
            return removed


async def _lock(tx: Transaction, topic_id: uuid.UUID, partition: int) -> _Locked:
    row: tuple[Any, ...] | None = await tx.fetchone(
        "SELECT t.name, p.log_start_offset, p.next_offset, p.bytes"
        "  FROM stream_partitions p JOIN stream_topics t USING (topic_id)"
        " WHERE p.topic_id = %s AND p.partition = %s AND t.deleted_at IS NULL"
        "   FOR UPDATE OF p",
        (topic_id, partition),
    )
    if row is None:
        raise NotFoundError(f"no partition {partition} of topic {topic_id}")
    return _Locked(str(row[0]), int(row[1]), int(row[2]), int(row[3]))


async def _truncate(tx: Transaction, topic_id: uuid.UUID, partition: int, start: int) -> int:
    """Under the partition's lock: the log start moves to ``start`` (never back), the rows
    wholly below it go with their bytes and references; returns how many rows went."""
    gone = await tx.fetchall(
        "DELETE FROM stream_batches"
        " WHERE topic_id = %s AND partition = %s AND last_offset < %s"
        " RETURNING object_key, byte_length",
        (topic_id, partition, start),
    )
    await tx.execute(
        "UPDATE stream_partitions SET log_start_offset = greatest(log_start_offset, %s),"
        "   bytes = greatest(0, bytes - %s)"
        " WHERE topic_id = %s AND partition = %s",
        (start, sum(int(r[1]) for r in gone), topic_id, partition),
    )
    await release_refs(tx, (str(r[0]) for r in gone))
    return len(gone)
