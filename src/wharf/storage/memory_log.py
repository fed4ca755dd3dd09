"""A log kept in memory, with the same API and semantics as :class:`~wharf.storage.log.Log`.

Used for transient AMQP queues and in tests. Batches are validated, offset-stamped and kept as
``bytes`` in emulated segments (rolled by ``segment_bytes`` and ``segment_ms``) so retention and
start-offset rules behave exactly as on disk. ``flush`` has nothing to do and returns
``next_offset``.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from wharf.errors import StorageError
from wharf.storage.log import AppendInfo, LogConfig
from wharf.storage.reader import check_read_range
from wharf.storage.record_batch import (
    LOG_OVERHEAD,
    RecordInput,
    build_batch,
    decode_records,
    set_base_offset,
)
from wharf.storage.retention import moves_log_start, segments_past_retention
from wharf.storage.segment import roll_base
from wharf.storage.validated import ValidatedBatches, validate_batches

__all__ = ["MemoryLog"]


@dataclass(slots=True)
class _Segment:
    base_offset: int
    roll_base_ms: int
    roll_by_timestamp: bool
    size: int = 0
    next_offset: int = 0
    max_timestamp: int = -1
    lasts: list[int] = field(default_factory=list)  # last offset of each batch, ascending
    batches: list[bytes] = field(default_factory=list)
    stamps: list[int] = field(default_factory=list)  # max timestamp of each batch


class MemoryLog:
    """An in-memory log. ``flush`` is a no-op returning :attr:`next_offset`."""

    def __init__(
        self,
        config: LogConfig | None = None,
        *,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        self.config = config or LogConfig()
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._segments = [self._new_segment(0)]
        self._log_start_offset = 0
        self._next_offset = 0
        self._size_bytes = 0
        self._closed = False

    def _new_segment(self, base: int) -> _Segment:
        return _Segment(base_offset=base, roll_base_ms=0, roll_by_timestamp=True, next_offset=base)

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        self._closed = True

    def delete(self) -> None:
        self._closed = True
        self._segments = [self._new_segment(self._next_offset)]
        self._size_bytes = 0

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------------ positions

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def next_offset(self) -> int:
        return self._next_offset

    @property
    def durable_offset(self) -> int:
        return self._next_offset

    @property
    def size_bytes(self) -> int:
        return self._size_bytes

    def segment_base_offsets(self) -> list[int]:
        return [s.base_offset for s in self._segments]

    # ------------------------------------------------------------------ appending

    def append(self, batches: bytes | bytearray | memoryview) -> AppendInfo:
        self._check_open()
        return self.append_validated(validate_batches(batches, self.config.max_batch_bytes))

    def append_validated(self, batches: ValidatedBatches) -> AppendInfo:
        self._check_open()
        view = batches.view
        n = batches.size
        base = self._next_offset
        max_ts = batches.max_timestamp
        seg, rolled = self._segment_for(n, max_ts, batches.headers[0].max_timestamp)
        offset = base
        position = seg.size
        for pos, header in zip(batches.positions, batches.headers, strict=True):
            buf = bytearray(view[pos : pos + header.batch_length + LOG_OVERHEAD])
            set_base_offset(buf, 0, offset)
            offset += header.last_offset_delta + 1
            seg.batches.append(bytes(buf))
            seg.lasts.append(offset - 1)
            seg.stamps.append(header.max_timestamp)
        seg.size += n
        seg.next_offset = offset
        seg.max_timestamp = max(seg.max_timestamp, max_ts)
        self._next_offset = offset
        self._size_bytes += n
        return AppendInfo(base, offset - 1, max_ts, n, position, rolled)

    def append_records(
        self, records: Sequence[RecordInput], *, compression: int = 0
    ) -> AppendInfo:
        return self.append(
            build_batch(records, compression=compression, now_ms=self._clock_ms())
        )

    def _segment_for(self, nbytes: int, max_ts: int, first_max_ts: int) -> tuple[_Segment, bool]:
        """The active segment, rolled first by size or age (see segment.roll_base), and
        whether it rolled."""
        seg = self._segments[-1]
        rolled = False
        if seg.batches:
            age = (max_ts if seg.roll_by_timestamp else self._clock_ms()) - seg.roll_base_ms
            if seg.size + nbytes > self.config.segment_bytes or age >= self.config.segment_ms:
                seg = self._roll()
                rolled = True
        if not seg.batches:
            seg.roll_base_ms, seg.roll_by_timestamp = roll_base(first_max_ts, self._clock_ms)
        return seg, rolled

    def _roll(self) -> _Segment:
        seg = self._new_segment(self._next_offset)
        self._segments.append(seg)
        return seg

    def flush(self) -> int:
        return self._next_offset

    # ------------------------------------------------------------------ reading

    def read(self, offset: int, max_bytes: int, *, max_offset: int | None = None) -> bytes:
        self._check_open()
        check_read_range(offset, self._log_start_offset, self._next_offset)
        limit = self._next_offset if max_offset is None else min(max_offset, self._next_offset)
        parts: list[bytes] = []
        total = 0
        bases = [s.base_offset for s in self._segments]
        for seg in self._segments[max(0, bisect_right(bases, offset) - 1) :]:
            i = bisect_right(seg.lasts, offset - 1)
            for batch, last in zip(seg.batches[i:], seg.lasts[i:], strict=True):
                if last >= limit:
                    return b"".join(parts)
                if parts and total + len(batch) > max_bytes:
                    return b"".join(parts)
                parts.append(batch)
                total += len(batch)
        return b"".join(parts)

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        self._check_open()
        lso = self._log_start_offset
        for seg in self._segments:
            if seg.next_offset <= lso or seg.max_timestamp < timestamp_ms:
                continue
            for batch, last, stamp in zip(seg.batches, seg.lasts, seg.stamps, strict=True):
                if last < lso or stamp < timestamp_ms:
                    continue
                for record in decode_records(batch):
                    if record.offset >= lso and record.timestamp_ms >= timestamp_ms:
                        return record.offset
        return None

    # ------------------------------------------------------------------ deletion

    def delete_records_before(self, offset: int) -> None:
        self._check_open()
        if not moves_log_start(offset, self._log_start_offset, self._next_offset):
            return
        self._log_start_offset = offset
        self._delete_segments_below(offset)

    def enforce_retention(self, now_ms: int) -> int:
        self._check_open()
        doomed = segments_past_retention(self._segments, self._size_bytes, self.config, now_ms)
        if doomed == 0:
            return 0
        if doomed == len(self._segments):
            self._roll()
        new_start = self._segments[doomed].base_offset
        self._log_start_offset = max(self._log_start_offset, new_start)
        self._delete_segments_below(new_start)
        return doomed

    def _delete_segments_below(self, offset: int) -> None:
        if self._segments[-1].next_offset <= offset and self._segments[-1].batches:
            self._roll()
        while len(self._segments) > 1 and self._segments[1].base_offset <= offset:
            self._size_bytes -= self._segments.pop(0).size

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError("memory log is closed")
