"""Reads of a :class:`~wharf.storage.log.Log`: whole batches from an offset, and the first
offset at or after a timestamp.

How it works. A read finds the segment holding the offset (a bisection over the segments' base
offsets), asks the segment's offset index for a position at or before it and walks the batch
headers from there (:meth:`LogSegment.scan <wharf.storage.segment.LogSegment.scan>`), cutting
at the byte budget, at ``max_offset`` and at the segment end, then goes on in the next
segment. The bytes are returned as stored: no record is decoded. A timestamp lookup skips the
segments whose largest timestamp is older, starts from the time index and decodes only the
batch that holds the answer. A scan that does not meet the batch the index promised rebuilds
that segment's indexes once (they were damaged) before it calls the data corrupt.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections.abc import Callable
from typing import TYPE_CHECKING

from wharf.errors import CorruptBatchError, OffsetOutOfRangeError
from wharf.storage.record_batch import Record, decode_records
from wharf.storage.segment import LogSegment

if TYPE_CHECKING:
    from wharf.storage.log import LogConfig

__all__ = ["LogReader", "check_read_range"]

_log = logging.getLogger(__name__)


def check_read_range(offset: int, log_start_offset: int, next_offset: int) -> None:
    """A read may start anywhere from the log start offset to the log end (where it finds
    nothing); elsewhere it raises :class:`OffsetOutOfRangeError`."""
    if offset < log_start_offset or offset > next_offset:
        raise OffsetOutOfRangeError(
            f"offset {offset} outside [{log_start_offset}, {next_offset}]"
        )


class LogReader:
    """The read half of :class:`~wharf.storage.log.Log` (a mixin over the log's state)."""

    path: str
    _config: LogConfig
    _segments: list[LogSegment]
    _bases: list[int]  # base offsets of _segments
    _log_start_offset: int
    _next_offset: int
    _check_open: Callable[[], None]

    def read(self, offset: int, max_bytes: int, *, max_offset: int | None = None) -> bytes:
        """Whole batches from the one containing ``offset``, up to ``max_bytes`` (at least one
        batch), none holding an offset at or past ``max_offset``."""
        self._check_open()
        check_read_range(offset, self._log_start_offset, self._next_offset)
        limit = self._next_offset if max_offset is None else min(max_offset, self._next_offset)
        parts: list[bytes] = []
        total = 0
        i = max(0, bisect_right(self._bases, offset) - 1)
        for seg in self._segments[i:]:
            if offset >= limit:
                break
            data, whole = self._read_segment(seg, offset, limit, max_bytes - total, not parts)
            if data:
                parts.append(data)
                total += len(data)
            if not whole:
                break
            offset = max(offset, seg.next_offset)
        return b"".join(parts)

    def _read_segment(
        self, seg: LogSegment, offset: int, limit: int, budget: int, first: bool
    ) -> tuple[bytes, bool]:
        """Batches of ``seg`` for :meth:`read`, and whether the read reached the segment end."""
        try:
            return self._read_segment_once(seg, offset, limit, budget, first)
        except CorruptBatchError:
            if not self._reindex(seg):
                raise
            return self._read_segment_once(seg, offset, limit, budget, first)

    def _reindex(self, seg: LogSegment) -> bool:
        """After a scan met something unexpected: rebuild the indexes if they are the cause.

        Returns False when the indexes were not involved (the data itself is bad).
        """
        if seg.index_is_consistent():
            return False
        _log.error("log %s: index of %s points at no batch; rebuilding it", self.path, seg.path)
        seg.rebuild_indexes()
        return True

    def _read_segment_once(
        self, seg: LogSegment, offset: int, limit: int, budget: int, first: bool
    ) -> tuple[bytes, bool]:
        start, expected = seg.start_position(offset)
        begin = -1
        end = -1
        chunk = b""
        chunk_start = 0
        chunk_size = max(budget, 0) + 2 * self._config.index_interval_bytes + 4096
        whole = True
        for pos, header, buf, buf_start in seg.scan(start, seg.size, chunk_size=chunk_size):
            if pos == start and header.base_offset != expected:
                raise CorruptBatchError(f"expected offset {expected} at position {pos}")
            chunk, chunk_start = buf, buf_start
            if header.last_offset < offset:
                continue
            if header.last_offset >= limit:
                whole = False
                break
            if begin < 0:
                if header.size > budget and not first:
                    return b"", False
                begin = pos
            elif pos + header.size - begin > budget:
                whole = False
                break
            end = pos + header.size
        if begin < 0:
            return b"", whole
        if chunk_start <= begin and end <= chunk_start + len(chunk):
            return chunk[begin - chunk_start : end - chunk_start], whole
        return seg.pread(begin, end - begin), whole

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        """The first offset (at or after the log start) whose timestamp is >= ``timestamp_ms``."""
        self._check_open()
        lso = self._log_start_offset
        for seg in self._segments:
            if seg.next_offset <= lso or seg.max_timestamp < timestamp_ms:
                continue
            try:
                found = self._offset_for_timestamp_in(seg, timestamp_ms, lso)
            except CorruptBatchError:
                if not self._reindex(seg):
                    raise
                found = self._offset_for_timestamp_in(seg, timestamp_ms, lso)
            if found is not None:
                return found
        return None

    def _offset_for_timestamp_in(self, seg: LogSegment, timestamp_ms: int, lso: int) -> int | None:
        start_offset = max(seg.time_index.start_offset(timestamp_ms), lso)
        start, expected = seg.start_position(start_offset)
        for pos, header, _chunk, _cs in seg.scan(start, seg.size):
            if pos == start and header.base_offset != expected:
                raise CorruptBatchError(f"expected offset {expected} at position {pos}")
            if header.last_offset < lso or header.max_timestamp < timestamp_ms:
                continue
            for record in self._decode_at(seg, pos, header.size):
                if record.offset >= lso and record.timestamp_ms >= timestamp_ms:
                    return record.offset
        return None

    def _decode_at(self, seg: LogSegment, position: int, size: int) -> list[Record]:
        return decode_records(seg.pread(position, size))
