"""Deletion in a :class:`~wharf.storage.log.Log`: records before an offset, and whole segments
past the retention limits.

How it works. Records are never removed from inside a segment: the *log start offset* hides
those below it, and a segment goes once the start offset is at or past its end (the active
segment is rolled first when it must go). ``delete_records_before`` moves the start offset
(Kafka's DeleteRecords, queue space reclaim); ``enforce_retention`` deletes the oldest segments
while one is older than ``retention_ms`` (by its largest timestamp) or the log is larger than
``retention_bytes`` without it. Nothing here fsyncs: the new start offset's checkpoint and the
directory entries of deleted segments are made durable by the next flush (see
:mod:`wharf.storage.flusher`), on the flushing thread. Until then a crash brings the hidden
records back, as when Kafka's checkpoint of the log start offset lags.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from wharf.errors import OffsetOutOfRangeError
from wharf.storage.segment import LogSegment

if TYPE_CHECKING:
    from wharf.storage.log import LogConfig

__all__ = ["LogRetention", "moves_log_start", "segments_past_retention"]


class RetainedSegment(Protocol):
    """What the retention rule reads of a segment (disk and memory segments alike)."""

    @property
    def size(self) -> int: ...

    @property
    def max_timestamp(self) -> int: ...


def moves_log_start(offset: int, log_start_offset: int, next_offset: int) -> bool:
    """Whether deleting the records before ``offset`` moves the log start: False at or below it,
    :class:`OffsetOutOfRangeError` past the log end."""
    if offset <= log_start_offset:
        return False
    if offset > next_offset:
        raise OffsetOutOfRangeError(f"cannot delete up to {offset}: the log ends at {next_offset}")
    return True


def segments_past_retention(
    segments: Sequence[RetainedSegment], total_bytes: int, config: LogConfig, now_ms: int
) -> int:
    """How many of the oldest ``segments`` the retention limits delete: each while it is older
    than ``retention_ms`` (by its largest timestamp) or the log without it is still at least
    ``retention_bytes``. An empty segment, and everything after it, is kept."""
    max_age, max_bytes = config.retention_ms, config.retention_bytes
    doomed = 0
    size = total_bytes
    for seg in segments:
        if seg.size == 0:
            break
        expired = max_age is not None and seg.max_timestamp < now_ms - max_age
        oversized = max_bytes is not None and size - seg.size >= max_bytes
        if not (expired or oversized):
            break
        doomed += 1
        size -= seg.size
    return doomed


class LogRetention:
    """The deletion half of :class:`~wharf.storage.log.Log` (a mixin over the log's state)."""

    _config: LogConfig
    _segments: list[LogSegment]
    _bases: list[int]
    _log_start_offset: int
    _next_offset: int
    _older_bytes: int
    _lock: threading.Lock
    _dirty: set[LogSegment]
    _dir_dirty: bool
    _start_dirty: bool
    _check_open: Callable[[], None]
    _roll: Callable[[], LogSegment]

    def delete_records_before(self, offset: int) -> None:
        """Make ``offset`` the first visible offset (saved by the next flush); drop segments
        wholly below."""
        self._check_open()
        if not moves_log_start(offset, self._log_start_offset, self._next_offset):
            return
        self._set_log_start_offset(offset)
        self._delete_segments_below(offset)

    def enforce_retention(self, now_ms: int) -> int:
        """Delete whole segments past ``retention_ms`` or beyond ``retention_bytes``.

        Returns the number of segments deleted.
        """
        self._check_open()
        total = self._older_bytes + self._segments[-1].size
        doomed = segments_past_retention(self._segments, total, self._config, now_ms)
        if doomed == 0:
            return 0
        if doomed == len(self._segments):
            self._roll()
        new_start = self._segments[doomed].base_offset
        if new_start > self._log_start_offset:
            self._set_log_start_offset(new_start)
        self._delete_segments_below(new_start)
        return doomed

    def _set_log_start_offset(self, offset: int) -> None:
        with self._lock:
            self._log_start_offset = offset
            self._start_dirty = True

    def _delete_segments_below(self, offset: int) -> None:
        if self._segments[-1].next_offset <= offset and not self._segments[-1].is_empty:
            self._roll()
        doomed: list[LogSegment] = []
        while len(self._segments) > 1 and self._segments[1].base_offset <= offset:
            with self._lock:
                seg = self._segments.pop(0)
                self._bases.pop(0)
                self._older_bytes -= seg.size
                self._dirty.discard(seg)
            doomed.append(seg)
        for seg in doomed:
            seg.delete_files()
        if doomed:
            with self._lock:
                self._dir_dirty = True
