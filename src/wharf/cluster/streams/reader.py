"""Reading a partition in a cluster: the batch index in PostgreSQL, the bytes in the object store.

How it works (docs/cluster.md, "Fetch and long poll"):

- :meth:`StreamReader.read` sends one statement, so it sees one snapshot: the partition's row
  (log start, high watermark = ``next_offset``; no row, or a deleted topic, is
  ``NotFoundError``) joined with its index rows ``WHERE (topic_id, partition) AND last_offset >=
  offset ORDER BY last_offset LIMIT n``, cut to the byte budget by a running sum (the first
  batch always, then each one while the total stays within ``max_bytes``). An offset below the
  log start or above the high watermark is ``OffsetOutOfRangeError``; at the high watermark the
  answer is empty. Only committed rows exist, so nothing uncommitted is ever served.
- The rows' byte ranges are read through the node's :class:`ObjectCache` (one call per object,
  the objects concurrently; the cache turns adjacent ranges into one GET). The batches come out
  back to back as stored, and in the outgoing copy each batch's 8-byte ``baseOffset`` is set from
  its index row and its ``partitionLeaderEpoch`` to 0: both lie before the CRC-covered part, so
  nothing is re-encoded and the producer's CRC stays valid. Each batch's length and offset span
  are checked against its row first (``CorruptBatchError`` if they disagree).
- :meth:`StreamReader.list_offset` answers ListOffsets from the same tables: -1 and -2 from the
  partition row; a timestamp from the first visible batch whose ``max_timestamp`` reaches it
  (then the first record in it at or after the timestamp); -3 from the visible batch with the
  largest ``max_timestamp``. The log start may cut a batch: records below it are not visible.
"""

from __future__ import annotations

import asyncio
import struct
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, LiteralString, NamedTuple

from wharf.cluster.database import Database
from wharf.cluster.objectstore import ObjectStore
from wharf.cluster.streams.object_cache import DEFAULT_CHUNK_BYTES, ObjectCache
from wharf.errors import (
    CorruptBatchError,
    InvalidArgumentError,
    NotFoundError,
    OffsetOutOfRangeError,
)
from wharf.storage.record_batch import (
    HEADER_SIZE,
    Record,
    decode_records,
    parse_header,
    set_base_offset,
)

__all__ = [
    "EARLIEST_TIMESTAMP",
    "LATEST_TIMESTAMP",
    "MAX_TIMESTAMP",
    "PartitionPosition",
    "StreamReader",
]

LATEST_TIMESTAMP = -1
EARLIEST_TIMESTAMP = -2
MAX_TIMESTAMP = -3

# Index rows one read may return, whatever its byte budget: a bound on one statement's work.
MAX_READ_ROWS = 2000
_RETRIES = 2
_LEADER_EPOCH = struct.Struct(">i")
_LEADER_EPOCH_AT = 12

_PARTITION: LiteralString = """
    SELECT p.log_start_offset, p.next_offset
    FROM stream_partitions p JOIN stream_topics t USING (topic_id)
    WHERE p.topic_id = %s AND p.partition = %s AND t.deleted_at IS NULL
"""

# Parameters: offset, offset, row limit, max bytes, topic, partition.
_READ: LiteralString = """
    SELECT p.log_start_offset, p.next_offset,
           b.base_offset, b.last_offset, b.object_key, b.byte_start, b.byte_length
    FROM stream_partitions p JOIN stream_topics t USING (topic_id)
    LEFT JOIN LATERAL (
        SELECT r.*,
               sum(r.byte_length) OVER (ORDER BY r.last_offset) AS through,
               row_number() OVER (ORDER BY r.last_offset) AS n
        FROM (
            SELECT base_offset, last_offset, object_key, byte_start, byte_length
            FROM stream_batches
            WHERE topic_id = p.topic_id AND partition = p.partition AND last_offset >= %s
              AND %s BETWEEN p.log_start_offset AND p.next_offset
              AND base_offset < p.next_offset
            ORDER BY last_offset
            LIMIT %s
        ) r
    ) b ON b.through <= %s OR b.n = 1
    WHERE p.topic_id = %s AND p.partition = %s AND t.deleted_at IS NULL
    ORDER BY b.last_offset
"""

# Parameters: from offset, timestamp, topic, partition.
_BY_TIMESTAMP: LiteralString = """
    SELECT p.log_start_offset, p.next_offset,
           b.base_offset, b.last_offset, b.object_key, b.byte_start, b.byte_length
    FROM stream_partitions p JOIN stream_topics t USING (topic_id)
    LEFT JOIN LATERAL (
        SELECT base_offset, last_offset, object_key, byte_start, byte_length
        FROM stream_batches
        WHERE topic_id = p.topic_id AND partition = p.partition
          AND last_offset >= greatest(p.log_start_offset, %s)
          AND base_offset < p.next_offset AND max_timestamp >= %s
        ORDER BY last_offset
        LIMIT 1
    ) b ON true
    WHERE p.topic_id = %s AND p.partition = %s AND t.deleted_at IS NULL
"""

# The two visible batches with the largest max_timestamp (ties: the earlier first). Only the
# batch holding the log start can be partly hidden, so the best wholly visible batch is one of
# these two. Parameters: topic, partition.
_BY_MAX_TIMESTAMP: LiteralString = """
    SELECT p.log_start_offset, p.next_offset,
           b.base_offset, b.last_offset, b.object_key, b.byte_start, b.byte_length
    FROM stream_partitions p JOIN stream_topics t USING (topic_id)
    LEFT JOIN LATERAL (
        SELECT base_offset, last_offset, object_key, byte_start, byte_length, max_timestamp
        FROM stream_batches
        WHERE topic_id = p.topic_id AND partition = p.partition
          AND last_offset >= p.log_start_offset AND base_offset < p.next_offset
        ORDER BY max_timestamp DESC, last_offset
        LIMIT 2
    ) b ON true
    WHERE p.topic_id = %s AND p.partition = %s AND t.deleted_at IS NULL
    ORDER BY b.max_timestamp DESC, b.last_offset
"""


@dataclass(frozen=True)
class PartitionPosition:
    log_start_offset: int
    high_watermark: int


class _Row(NamedTuple):
    """One ``stream_batches`` row: where a batch lies and which offsets it holds."""

    base_offset: int
    last_offset: int
    object_key: str
    byte_start: int
    byte_length: int


class StreamReader:
    """Reads partitions for fetches and ListOffsets; one per node. See the module docstring.

    ``observe(operation, seconds)`` is called after each ``read`` and ``list_offset``.
    """

    def __init__(
        self,
        db: Database,
        store: ObjectStore,
        cache_bytes: int = 256 * 1024 * 1024,
        observe: Callable[[str, float], None] | None = None,
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        self._db = db
        self._cache = ObjectCache(store, cache_bytes, chunk_bytes)
        self._observe = observe

    @property
    def cache_hits(self) -> int:
        """Object chunks served without a GET of their own."""
        return self._cache.hits

    @property
    def cache_misses(self) -> int:
        """Object chunks fetched from the store."""
        return self._cache.misses

    @property
    def cache_bytes_used(self) -> int:
        return self._cache.size_bytes

    def remember(self, key: str, data: bytes) -> None:
        """The writer's hook: an object it has just committed, for tail consumers."""
        self._cache.remember(key, data)

    async def position(self, topic_id: uuid.UUID, partition: int) -> PartitionPosition:
        """The partition's log start and high watermark; ``NotFoundError`` if it has none."""
        rows = await self._db.statement(
            _PARTITION, (topic_id, partition), "streams.position", retries=_RETRIES,
            read_only=True,
        )  # fmt: skip
        if not rows:
            raise _unknown(topic_id, partition)
        return PartitionPosition(int(rows[0][0]), int(rows[0][1]))

    async def read(
        self, topic_id: uuid.UUID, partition: int, offset: int, max_bytes: int
    ) -> tuple[bytes, PartitionPosition]:
        """Whole batches from the one holding ``offset``, within ``max_bytes`` except that the
        first batch comes whole whatever its size; see the module docstring."""
        started = time.perf_counter()
        try:
            limit = max(1, min(MAX_READ_ROWS, max_bytes // HEADER_SIZE + 1))
            params = (offset, offset, limit, max_bytes, topic_id, partition)
            position, rows = await self._query(_READ, params, topic_id, partition)
            _check_range(position, offset, topic_id, partition)
            if offset == position.high_watermark:
                return b"", position
            return await self._batches(rows), position
        finally:
            if self._observe is not None:
                self._observe("read", time.perf_counter() - started)

    async def list_offset(
        self, topic_id: uuid.UUID, partition: int, timestamp_ms: int
    ) -> tuple[int, int]:
        """ListOffsets: ``(offset, timestamp)`` for a timestamp, or for -1 (the high
        watermark), -2 (the log start) or -3 (the record with the largest timestamp);
        ``(-1, -1)`` when no visible record qualifies."""
        started = time.perf_counter()
        try:
            if timestamp_ms in (LATEST_TIMESTAMP, EARLIEST_TIMESTAMP):
                position = await self.position(topic_id, partition)
                if timestamp_ms == LATEST_TIMESTAMP:
                    return position.high_watermark, -1
                return position.log_start_offset, -1
            if timestamp_ms == MAX_TIMESTAMP:
                return await self._max_timestamp(topic_id, partition)
            if timestamp_ms < 0:
                raise InvalidArgumentError(f"unsupported ListOffsets timestamp {timestamp_ms}")
            return await self._offset_for_timestamp(topic_id, partition, timestamp_ms)
        finally:
            if self._observe is not None:
                self._observe("list_offset", time.perf_counter() - started)

    async def _offset_for_timestamp(
        self, topic_id: uuid.UUID, partition: int, timestamp_ms: int
    ) -> tuple[int, int]:
        after = 0
        while True:
            params = (after, timestamp_ms, topic_id, partition)
            position, rows = await self._query(_BY_TIMESTAMP, params, topic_id, partition)
            if not rows:
                return -1, -1
            start = position.log_start_offset
            for record in await self._records(rows[0]):
                if record.offset >= start and record.timestamp_ms >= timestamp_ms:
                    return record.offset, record.timestamp_ms
            # the batch's qualifying records lie below the log start: look further on
            after = rows[0].last_offset + 1

    async def _max_timestamp(self, topic_id: uuid.UUID, partition: int) -> tuple[int, int]:
        position, rows = await self._query(
            _BY_MAX_TIMESTAMP, (topic_id, partition), topic_id, partition
        )
        best: tuple[int, int] | None = None
        for row in rows:
            visible = [
                r for r in await self._records(row) if r.offset >= position.log_start_offset
            ]
            if not visible:
                continue
            top = max(r.timestamp_ms for r in visible)
            offset = next(r.offset for r in visible if r.timestamp_ms == top)
            if best is None or top > best[1]:
                best = (offset, top)
            if row.base_offset >= position.log_start_offset:
                break  # wholly visible: no batch after it in this order can do better
        return best if best is not None else (-1, -1)

    async def _query(
        self, sql: LiteralString, params: tuple[Any, ...], topic_id: uuid.UUID, partition: int
    ) -> tuple[PartitionPosition, list[_Row]]:
        """Run one of the joined statements above: the position and the index rows."""
        result = await self._db.statement(
            sql, params, "streams.read", retries=_RETRIES, read_only=True
        )
        if not result:
            raise _unknown(topic_id, partition)
        position = PartitionPosition(int(result[0][0]), int(result[0][1]))
        rows = [
            _Row(int(r[2]), int(r[3]), r[4], int(r[5]), int(r[6]))
            for r in result
            if r[2] is not None
        ]
        return position, rows

    async def _batches(self, rows: list[_Row]) -> bytes:
        """The rows' batches back to back, with base offsets and leader epochs set."""
        by_object: dict[str, list[_Row]] = {}
        for row in rows:
            by_object.setdefault(row.object_key, []).append(row)
        keys = list(by_object)
        read = await asyncio.gather(
            *(
                self._cache.read_ranges(
                    key, [(row.byte_start, row.byte_length) for row in by_object[key]]
                )
                for key in keys
            )
        )
        pieces: dict[tuple[str, int], bytes] = {}
        for key, key_pieces in zip(keys, read, strict=True):
            for row, piece in zip(by_object[key], key_pieces, strict=True):
                pieces[(key, row.byte_start)] = piece
        out = bytearray()
        for row in rows:
            at = len(out)
            out += pieces[(row.object_key, row.byte_start)]
            _check_batch(out, at, row)
            set_base_offset(out, at, row.base_offset)
            _LEADER_EPOCH.pack_into(out, at + _LEADER_EPOCH_AT, 0)
        return bytes(out)

    async def _records(self, row: _Row) -> list[Record]:
        return decode_records(await self._batches([row]))


def _check_range(
    position: PartitionPosition, offset: int, topic_id: uuid.UUID, partition: int
) -> None:
    if not position.log_start_offset <= offset <= position.high_watermark:
        raise OffsetOutOfRangeError(
            f"offset {offset} is outside partition {topic_id}/{partition}: its log starts at "
            f"{position.log_start_offset} and its high watermark is {position.high_watermark}"
        )


def _check_batch(out: bytearray, at: int, row: _Row) -> None:
    """The stored batch is the one its index row describes (length and offset span)."""
    header = parse_header(out, at)
    if header.size != row.byte_length or header.last_offset_delta != (
        row.last_offset - row.base_offset
    ):
        raise CorruptBatchError(
            f"object {row.object_key} at byte {row.byte_start}: a batch of {header.size} bytes"
            f" and {header.last_offset_delta + 1} offsets, where the index has one of"
            f" {row.byte_length} bytes for offsets {row.base_offset}..{row.last_offset}"
        )


def _unknown(topic_id: uuid.UUID, partition: int) -> NotFoundError:
    return NotFoundError(f"no partition {partition} of topic {topic_id}")
