"""The segmented append-only log: one per Kafka partition, per queue, per internal log.

How it works. A :class:`Log` is a directory of :class:`~wharf.storage.segment.LogSegment`s,
the last of which (the *active* segment) takes appends. An append validates its batches
(header and CRC; no record is decoded) or takes batches validated once already
(:class:`~wharf.storage.validated.ValidatedBatches`), and writes them with one ``pwritev`` into
the page cache, the log's base offsets patched in on the way (no copy of the batches).
Segments roll by size (``segment_bytes``), by age (``segment_ms``) and when relative offsets
would overflow; the append that rolled says so (:attr:`AppendInfo.rolled`). A rolled segment's
index files are written at roll time and fsynced by the next flush.

The rest of the log is in modules of its own, mixed into :class:`Log` over one shared state:
durability (``flush``, the recovery point, fencing) in :mod:`wharf.storage.flusher`, reads in
:mod:`wharf.storage.reader`, deletion and retention in :mod:`wharf.storage.retention`; opening
and recovery in :mod:`wharf.storage.loader`.

Threads: one owner thread calls everything; one other thread (the group committer) may call
``flush`` at the same time (see :mod:`wharf.storage.flusher`).
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import crc32c

from wharf.errors import StorageError
from wharf.storage.checkpoint import fsync_dir
from wharf.storage.flusher import LogFlusher
from wharf.storage.loader import LogLoader
from wharf.storage.reader import LogReader
from wharf.storage.record_batch import (
    APPEND_FIELDS,
    CRC_START,
    DEFAULT_MAX_BATCH_BYTES,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    MIN_BATCH_LENGTH,
    RecordInput,
    build_batch,
)
from wharf.storage.retention import LogRetention
from wharf.storage.segment import (
    MAX_IOV,
    MAX_RELATIVE_OFFSET,
    MAX_SEGMENT_POSITION,
    LogSegment,
    roll_base,
)
from wharf.storage.validated import ValidatedBatches, validate_batches

__all__ = ["AppendInfo", "Log", "LogConfig", "remove_log_dir"]

_DAY_MS = 24 * 3600 * 1000
# Bound once for the append path, which runs them once per append.
_pack_offset = struct.Struct(">q").pack
_unpack_append = APPEND_FIELDS.unpack_from
_crc32c = crc32c.crc32c
_pwritev = os.pwritev
_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LogConfig:
    """Settings of one log (Kafka's topic config names in snake case)."""

    segment_bytes: int = 1 << 30
    segment_ms: int = 7 * _DAY_MS
    retention_ms: int | None = 7 * _DAY_MS  # None: keep forever
    retention_bytes: int | None = None  # None: no size limit
    index_interval_bytes: int = 4096
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    # A flush moves the recovery point when this many bytes were flushed, or this much time
    # went by, since it last moved (None: only at roll and close). Bounds re-verification;
    # each move costs four fsyncs of small files (two index files, checkpoint, directory).
    recovery_point_interval_bytes: int | None = 64 << 20
    recovery_point_interval_ms: int | None = 60_000

    def __post_init__(self) -> None:
        if self.segment_bytes < 1 or self.segment_ms < 1 or self.index_interval_bytes < 1:
            raise ValueError("segment_bytes, segment_ms and index_interval_bytes must be >= 1")
        if self.max_batch_bytes < 61:
            raise ValueError("max_batch_bytes must hold at least one batch header (61 bytes)")
        for name in ("recovery_point_interval_bytes", "recovery_point_interval_ms"):
            interval = getattr(self, name)
            if interval is not None and interval < 1:
                raise ValueError(f"{name} must be >= 1 or None")


class AppendInfo(NamedTuple):
    """Where an append went: its offsets, largest timestamp, byte size and file position, and
    whether the log rolled to a new segment for it (the append opens that segment)."""

    base_offset: int
    last_offset: int
    max_timestamp: int
    size: int
    position: int
    rolled: bool = False


# AppendInfo from a tuple without the keyword handling of its constructor or the length check
# of _make (append's hot path): tuple.__new__(AppendInfo, fields).
_new_tuple = tuple.__new__


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Log(LogFlusher, LogReader, LogRetention):
    """A segmented log on disk. Create with :meth:`Log.open`."""

    def __init__(
        self,
        path: str,
        config: LogConfig,
        segments: list[LogSegment],
        log_start_offset: int,
        recovery_point: int,
        clock_ms: Callable[[], int],
        truncated_bytes: int = 0,
        verified_bytes: int = 0,
        *,
        as_closed: bool = False,
    ) -> None:
        self.path = path
        # Bytes of torn tail that recovery cut off when this log was opened.
        self.recovery_truncated_bytes = truncated_bytes
        # Bytes whose CRC recovery checked when this log was opened (those past the checkpoint).
        self.recovery_verified_bytes = verified_bytes
        self.config = config  # also sets the cached limits below
        self._clock_ms = clock_ms
        self._segments = segments
        self._bases = [s.base_offset for s in segments]
        self._log_start_offset = log_start_offset
        self._next_offset = segments[-1].next_offset
        # Bytes of the segments before the active one (size_bytes adds the active one's).
        self._older_bytes = sum(s.size for s in segments[:-1])
        self._recovery_point = recovery_point
        self._durable_offset = self._next_offset
        # Shared with the committer thread, guarded by _lock (see LogFlusher):
        self._lock = threading.Lock()
        self._active_dirty = False
        self._dirty = set()
        self._unsynced_index_paths = []
        self._dir_dirty = False
        self._start_dirty = False
        # Bytes appended through this object = this + the active segment's size.
        self._appended_before_active = -segments[-1].size
        self._closed = False
        self._fenced = None  # why, once an fsync failed (see LogFlusher)
        self._flush_lock = threading.Lock()
        self._checkpoint_lock = threading.Lock()
        self._checkpoint_bytes = 0
        self._checkpoint_ms = clock_ms()
        self._index_files_lock = threading.Lock()
        self._indexes_final = False
        # What the log was when found as a clean close leaves it (None when not so found).
        self._found: tuple[int, int, list[tuple[int, int]]] | None = (
            self._shape() if as_closed else None
        )

    # ------------------------------------------------------------------ lifecycle

    @property
    def config(self) -> LogConfig:
        return self._config

    @config.setter
    def config(self, config: LogConfig) -> None:
        """Take new settings (a topic's config changed); they apply from the next append."""
        self._config = config
        self._max_batch_bytes = config.max_batch_bytes
        # Rolling by size also keeps positions inside the u32 range of the offset index.
        self._segment_bytes = min(config.segment_bytes, MAX_SEGMENT_POSITION)
        self._segment_ms = config.segment_ms

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        config: LogConfig | None = None,
        *,
        clock_ms: Callable[[], int] | None = None,
    ) -> Log:
        """Open or create the log at ``path``, recovering it if needed."""
        config = config or LogConfig()
        clock = clock_ms or _wall_clock_ms
        directory = os.fspath(path)
        loaded = LogLoader(directory, config.index_interval_bytes, clock()).load()
        return cls(
            directory,
            config,
            loaded.segments,
            loaded.log_start_offset,
            loaded.recovery_point,
            clock,
            loaded.truncated_bytes,
            loaded.verified_bytes,
            as_closed=loaded.as_closed,
        )

    def close(self) -> None:
        """Flush, write the indexes and the recovery point, and release the files. A fenced
        log only releases its files: its recovery point stays where durability ended. A log
        found as a clean close leaves it, and not changed since, is released without a write:
        its files already say everything a close would write."""
        if self._closed:
            return
        active = self._segments[-1]
        if self._fenced is not None:
            self._release()
            return
        if self._as_found():
            self._release_reserved(active)
            self._release()
            return
        try:
            with self._index_files_lock:
                self._indexes_final = True
                active.write_indexes()
        except OSError as exc:
            raise StorageError(f"cannot write indexes of {active.path}: {exc}",
                               errno=exc.errno) from exc
        with self._lock:
            self._unsynced_index_paths += [active.index.path, active.time_index.path]
        self.flush()
        self._write_recovery_point(self._next_offset, self._appended_before_active + active.size)
        self._release_reserved(active)
        self._release()

    def _shape(self) -> tuple[int, int, list[tuple[int, int]]]:
        """Start and end offsets and every segment's base offset and size: any write, roll,
        truncation or deletion changes it."""
        return (
            self._log_start_offset,
            self._next_offset,
            [(seg.base_offset, seg.size) for seg in self._segments],
        )

    def _as_found(self) -> bool:
        """Whether the log is still as :meth:`open` found it after a clean close, with
        nothing left to sync."""
        if self._found is None or self._recovery_point != self._next_offset:
            return False
        with self._lock:
            unsynced = (
                self._active_dirty
                or self._dirty
                or self._unsynced_index_paths
                or self._dir_dirty
                or self._start_dirty
            )
        return not unsynced and self._shape() == self._found

    def _release_reserved(self, seg: LogSegment) -> None:
        """Give back the space reserved past the end of ``seg``; a failure only costs disk
        space until the segment is deleted, so it is logged, not raised."""
        try:
            seg.release_reserved()
        except StorageError as exc:
            _log.warning("log %s: %s", self.path, exc)

    def _release(self) -> None:
        # Under the lock, so that a concurrent flush either sees the log closed or has already
        # duplicated the descriptors it syncs.
        with self._lock:
            self._closed = True
            for seg in self._segments:
                seg.close()

    def delete(self, *, sync: bool = True) -> None:
        """Close the log and remove its directory with everything in it (``sync``: and fsync
        the parent directory; a caller removing many logs may do that once itself)."""
        self._release()
        remove_log_dir(self.path, sync=sync)

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
        return self._durable_offset

    @property
    def recovery_point(self) -> int:
        """The checkpointed offset below which the next open trusts the data."""
        return self._recovery_point

    @property
    def size_bytes(self) -> int:
        return self._older_bytes + self._segments[-1].size

    def segment_base_offsets(self) -> list[int]:
        return list(self._bases)

    def oldest_segment(self) -> tuple[int, int]:
        """``(bytes, largest batch max timestamp or -1)`` of the oldest segment."""
        oldest = self._segments[0]
        return oldest.size, oldest.max_timestamp

    def segment_timestamps(self) -> list[tuple[int, int, int]]:
        """``(base offset, next offset, largest batch max timestamp or -1)`` of every segment,
        oldest first."""
        return [(s.base_offset, s.next_offset, s.max_timestamp) for s in self._segments]

    # ------------------------------------------------------------------ appending

    def append(self, batches: bytes | bytearray | memoryview) -> AppendInfo:
        """Validate one or more concatenated batches, assign offsets and write them (no fsync).

        Raises :class:`CorruptBatchError` for invalid input (nothing is written) and
        :class:`StorageError` for I/O failures (nothing is kept).
        """
        view = memoryview(batches)
        n = len(view)
        # One whole, valid batch (every batch Wharf encodes) is checked inline and written by
        # _append_one: this runs once per append, and each call or lookup saved here shows in
        # the throughput of small batches (docs/performance.md). The checks are those of
        # validate_batches; append_validated takes everything else, after validate_batches
        # has named what is wrong with invalid input.
        if n >= HEADER_SIZE and not self._closed and self._fenced is None:
            length, _epoch, magic, crc, delta, max_ts, count = _unpack_append(view, 8)
            if (
                length + LOG_OVERHEAD == n
                and magic == MAGIC
                and length >= MIN_BATCH_LENGTH
                and n <= self._max_batch_bytes
                and delta >= 0
                and count >= 0
                and _crc32c(view[CRC_START:]) == crc
            ):
                return self._append_one(view, n, delta, max_ts)
        self._check_open()
        self._check_not_fenced()
        return self.append_validated(validate_batches(view, self._max_batch_bytes))

    def append_validated(self, batches: ValidatedBatches) -> AppendInfo:
        """Assign offsets to batches that :func:`~wharf.storage.validated.validate_batches`
        passed (against this log's ``max_batch_bytes``) and write them (no fsync).

        Raises :class:`StorageError` for I/O failures (nothing is kept) and when the log is
        closed or fenced.
        """
        headers = batches.headers
        if len(headers) == 1 and not self._closed and self._fenced is None:
            header = headers[0]
            return self._append_one(
                batches.view, batches.size, header.last_offset_delta, header.max_timestamp
            )
        self._check_open()
        self._check_not_fenced()
        view = batches.view
        n = batches.size
        base = end = self._next_offset
        positions = batches.positions
        pieces: list[bytes | memoryview] = []
        for pos, header in zip(positions, headers, strict=True):
            pieces.append(_pack_offset(end))
            pieces.append(view[pos + 8 : pos + header.batch_length + LOG_OVERHEAD])
            end += header.last_offset_delta + 1
        max_ts = batches.max_timestamp
        seg, position, rolled = self._place(n, end, max_ts, headers[0].max_timestamp)
        written = 0
        try:
            if len(pieces) <= MAX_IOV:
                written = _pwritev(seg.fd, pieces, position)
        except OSError as exc:
            seg.write_failed(0, n, exc)
        if written != n:
            seg.finish_write(pieces, n, written)
        offset = base
        for pos, header in zip(positions, headers, strict=True):
            seg.note_batch(position + pos, offset, header.max_timestamp)
            offset += header.last_offset_delta + 1
        with self._lock:
            seg.size = position + n
            seg.next_offset = end
            self._next_offset = end
            self._active_dirty = True
        return AppendInfo(base, end - 1, max_ts, n, position, rolled)

    def _append_one(self, view: memoryview, n: int, delta: int, max_ts: int) -> AppendInfo:
        """Write one valid batch of ``n`` bytes (``delta`` = its last offset delta): the
        append path of a single batch, from raw bytes or validated ones."""
        base = self._next_offset
        end = base + delta + 1
        # _place, inline (each call saved shows in small-batch throughput):
        seg = self._segments[-1]
        position = seg.size
        rolled = False
        if position and (
            position + n > self._segment_bytes
            or end > seg.base_offset + MAX_RELATIVE_OFFSET + 1
            or (max_ts if seg.roll_by_timestamp else self._clock_ms()) - seg.roll_base_ms
            >= self._segment_ms
        ):
            seg = self._roll()
            position = 0
            rolled = True
        if not position:
            seg.roll_base_ms, seg.roll_by_timestamp = roll_base(max_ts, self._clock_ms)
        if position + n > seg.reserved_end:
            seg.reserve_for(position + n)
        # The base offset is patched in by writing the batch as two pieces: its new
        # first eight bytes and the caller's bytes after them (no copy of the batch).
        pieces: list[bytes | memoryview] = [_pack_offset(base), view[8:]]
        try:
            written = _pwritev(seg.fd, pieces, position)
        except OSError as exc:
            seg.write_failed(0, n, exc)
        if written != n:
            seg.finish_write(pieces, n, written)
        if position >= seg.index_due:
            seg.note_batch(position, base, max_ts)
        elif max_ts > seg.max_timestamp:
            seg.max_timestamp = max_ts
        with self._lock:
            seg.size = position + n
            seg.next_offset = end
            self._next_offset = end
            self._active_dirty = True
        return _new_tuple(AppendInfo, (base, end - 1, max_ts, n, position, rolled))

    def _place(
        self, n: int, end: int, max_ts: int, first_max_ts: int
    ) -> tuple[LogSegment, int, bool]:
        """The segment and position where ``n`` bytes of batches ending before offset ``end``
        (largest timestamp ``max_ts``, the first batch's ``first_max_ts``) go: the active
        segment, rolled first if the append would take it past its size, its relative offset
        range or its age (see segment.roll_base), and whether it rolled. Reserves blocks ahead
        when needed."""
        seg = self._segments[-1]
        position = seg.size
        rolled = False
        if position and (
            position + n > self._segment_bytes
            or end > seg.base_offset + MAX_RELATIVE_OFFSET + 1
            or (max_ts if seg.roll_by_timestamp else self._clock_ms()) - seg.roll_base_ms
            >= self._segment_ms
        ):
            seg = self._roll()
            position = 0
            rolled = True
        if not position:
            seg.roll_base_ms, seg.roll_by_timestamp = roll_base(first_max_ts, self._clock_ms)
        if position + n > seg.reserved_end:
            seg.reserve_for(position + n)
        return seg, position, rolled

    def append_records(
        self, records: Sequence[RecordInput], *, compression: int = 0
    ) -> AppendInfo:
        """Encode ``records`` into one batch and append it."""
        return self.append(
            build_batch(records, compression=compression, now_ms=self._clock_ms())
        )

    def _roll(self) -> LogSegment:
        """Start a new active segment at the next offset."""
        old = self._segments[-1]
        self._release_reserved(old)
        new = LogSegment(self.path, self._next_offset, self.config.index_interval_bytes)
        new.open(create=True)
        # The whole index files are written and the new segment becomes the active one in one
        # step for a flush, which writes the active segment's files only while it is active.
        with self._index_files_lock:
            try:
                old.write_indexes()
            except OSError as exc:
                new.delete_files()
                raise StorageError(f"cannot write indexes of {old.path}: {exc}",
                                   errno=exc.errno) from exc
            with self._lock:
                self._older_bytes += old.size
                self._appended_before_active += old.size
                if self._active_dirty:
                    self._dirty.add(old)
                    self._active_dirty = False
                self._segments.append(new)
                self._bases.append(new.base_offset)
                self._unsynced_index_paths += [old.index.path, old.time_index.path]
                self._dir_dirty = True
        return new

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"log {self.path} is closed")


def remove_log_dir(path: str | os.PathLike[str], *, sync: bool = True) -> None:
    """Remove a log's directory (closed, or never opened) and everything in it, durably
    unless not ``sync``; no directory is no error (and no fsync)."""
    if not os.path.lexists(path):
        return
    shutil.rmtree(path, ignore_errors=True)
    if not sync:
        return
    parent = os.path.dirname(os.path.abspath(path))
    try:
        fsync_dir(parent)
    except OSError as exc:
        raise StorageError(f"cannot sync {parent}: {exc}", errno=exc.errno) from exc
