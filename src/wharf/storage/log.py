"""The segmented append-only log: one per Kafka partition, per queue, per internal log.

How it works. A :class:`Log` is a directory of :class:`~wharf.storage.segment.LogSegment`s,
the last of which (the *active* segment) takes appends. ``append`` validates each incoming
batch's header and CRC (no record is decoded), patches in the base offsets and writes the bytes
with one ``pwrite`` into the page cache. Durability is separate: ``flush`` fdatasyncs the
segments written since the last flush and reports the durable end offset.

Threads: one owner thread calls everything; one other thread (the group committer) may call
``flush`` at the same time. ``flush`` takes its snapshot (dirty segments, target offset) under a
lock, releases it for the fsyncs (on duplicated file descriptors, so a segment deleted meanwhile
cannot pull its descriptor away), then publishes the new durable offset under the lock again.

Segments roll by size (``segment_bytes``) and age (``segment_ms``); a rolled segment's index
files are written at roll time and fsynced by the next flush, after which the recovery point
checkpoint moves past it (see :mod:`wharf.storage.loader`).

The recovery point also follows the flushes inside the active segment, throttled by
``recovery_point_interval_bytes`` and ``recovery_point_interval_ms``: after a flush returns,
if that many bytes were flushed or that much time went by since the last checkpoint, the
flushing thread writes the active segment's index files (entries below the flushed offset, so
the next recovery can start walking near the checkpoint), fsyncs them, then writes the
checkpoint with the offset that flush made durable. So a crash re-verifies at most about that
many bytes, and the checkpoint never names an offset that was not fsynced. Flushes run one at
a time (``_flush_lock``); appends never wait for them.
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
import threading
import time
from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, NoReturn

import crc32c

from wharf.errors import CorruptBatchError, StorageError
from wharf.storage.checkpoint import fsync_dir, write_checkpoint
from wharf.storage.loader import LOG_START_OFFSET_FILE, RECOVERY_POINT_FILE, LogLoader
from wharf.storage.record_batch import (
    APPEND_FIELDS,
    CRC_START,
    DEFAULT_MAX_BATCH_BYTES,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    MIN_BATCH_LENGTH,
    Record,
    RecordInput,
    build_batch,
    decode_records,
    validate_batches,
)
from wharf.storage.segment import (
    MAX_IOV,
    MAX_RELATIVE_OFFSET,
    MAX_SEGMENT_POSITION,
    LogSegment,
    roll_base,
)

__all__ = ["AppendInfo", "Log", "LogConfig", "OffsetOutOfRangeError"]

_DAY_MS = 24 * 3600 * 1000
# Bound once for the append path, which runs them once per append.
_pack_offset = struct.Struct(">q").pack
_unpack_append = APPEND_FIELDS.unpack_from
_crc32c = crc32c.crc32c
_pwritev = os.pwritev
_log = logging.getLogger(__name__)


class OffsetOutOfRangeError(StorageError):
    """The requested offset is before the log start offset or after the log end."""


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
    """Where an append went: its offsets, largest timestamp, byte size and file position."""

    base_offset: int
    last_offset: int
    max_timestamp: int
    size: int
    position: int


# AppendInfo from a tuple without the keyword handling of its constructor or the length check
# of _make (append's hot path): tuple.__new__(AppendInfo, fields).
_new_tuple = tuple.__new__


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class Log:
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
        # Shared with the committer thread, guarded by _lock:
        self._lock = threading.Lock()
        self._active_dirty = False  # the active segment has writes a flush has not synced
        self._dirty: set[LogSegment] = set()  # older segments with such writes
        self._unsynced_index_paths: list[str] = []
        self._dir_dirty = False
        # Bytes appended through this object = this + the active segment's size.
        self._appended_before_active = -segments[-1].size
        self._closed = False
        # Why the log is fenced, once an fsync failed: the kernel may have dropped the pages
        # it could not write, and a later fsync would then succeed without them. A fenced log
        # takes no more appends and reports nothing more as durable; opening it again (a
        # restart) recovers it and writes its unverified tail anew (see the loader).
        self._fenced: StorageError | None = None
        # One flush at a time, so that no flush reports (or checkpoints) an offset whose fsync
        # another flush is still running.
        self._flush_lock = threading.Lock()
        # Guards writes of the recovery point and what its throttle remembers:
        self._checkpoint_lock = threading.Lock()
        self._checkpoint_bytes = 0  # appended bytes covered by the last checkpoint
        self._checkpoint_ms = clock_ms()
        # Guards writing index files, which the owner (roll, close) and a flush may both do;
        # a flush writes the active segment's files only while _indexes_final is False.
        self._index_files_lock = threading.Lock()
        self._indexes_final = False

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
        )

    def close(self) -> None:
        """Flush, write the indexes and the recovery point, and release the files. A fenced
        log only releases its files: its recovery point stays where durability ended."""
        if self._closed:
            return
        active = self._segments[-1]
        if self._fenced is not None:
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

    def delete(self) -> None:
        """Close the log and remove its directory with everything in it."""
        self._release()
        shutil.rmtree(self.path, ignore_errors=True)
        parent = os.path.dirname(os.path.abspath(self.path))
        try:
            fsync_dir(parent)
        except OSError as exc:
            raise StorageError(f"cannot sync {parent}: {exc}", errno=exc.errno) from exc

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
        # One whole, valid batch (a Kafka produce of one partition, every batch Wharf encodes)
        # is appended inline: this runs once per append, and each call or lookup saved here
        # shows in the throughput of small batches (docs/performance.md). The checks are
        # those of validate_batches; _append_batches takes everything else and, for invalid
        # input, names what is wrong.
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
                base = self._next_offset
                end = base + delta + 1
                # _place, inline:
                seg = self._segments[-1]
                position = seg.size
                if position and (
                    position + n > self._segment_bytes
                    or end > seg.base_offset + MAX_RELATIVE_OFFSET + 1
                    or (max_ts if seg.roll_by_timestamp else self._clock_ms()) - seg.roll_base_ms
                    >= self._segment_ms
                ):
                    seg = self._roll()
                    position = 0
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
                return _new_tuple(AppendInfo, (base, end - 1, max_ts, n, position))
        return self._append_batches(view, n)

    def _append_batches(self, view: memoryview, n: int) -> AppendInfo:
        """``append`` of anything but one valid batch: several batches, or invalid input, or a
        log that takes no appends."""
        self._check_open()
        self._check_not_fenced()
        if n == 0:
            raise CorruptBatchError("empty append: no batch given")
        spans = validate_batches(view, self._max_batch_bytes)
        base = end = self._next_offset
        max_ts = -1
        pieces: list[bytes | memoryview] = []
        for pos, size, delta, batch_max_ts in spans:
            pieces.append(_pack_offset(end))
            pieces.append(view[pos + 8 : pos + size])
            end += delta + 1
            max_ts = max(max_ts, batch_max_ts)
        seg, position = self._place(n, end, max_ts, spans[0][3])
        written = 0
        try:
            if len(pieces) <= MAX_IOV:
                written = _pwritev(seg.fd, pieces, position)
        except OSError as exc:
            seg.write_failed(0, n, exc)
        if written != n:
            seg.finish_write(pieces, n, written)
        offset = base
        for pos, _size, delta, batch_max_ts in spans:
            seg.note_batch(position + pos, offset, batch_max_ts)
            offset += delta + 1
        with self._lock:
            seg.size = position + n
            seg.next_offset = end
            self._next_offset = end
            self._active_dirty = True
        return AppendInfo(base, end - 1, max_ts, n, position)

    def _place(self, n: int, end: int, max_ts: int, first_max_ts: int) -> tuple[LogSegment, int]:
        """The segment and position where ``n`` bytes of batches ending before offset ``end``
        (largest timestamp ``max_ts``, the first batch's ``first_max_ts``) go: the active
        segment, rolled first if the append would take it past its size, its relative offset
        range or its age (see segment.roll_base). Reserves blocks ahead when needed."""
        seg = self._segments[-1]
        position = seg.size
        if position and (
            position + n > self._segment_bytes
            or end > seg.base_offset + MAX_RELATIVE_OFFSET + 1
            or (max_ts if seg.roll_by_timestamp else self._clock_ms()) - seg.roll_base_ms
            >= self._segment_ms
        ):
            seg = self._roll()
            position = 0
        if not position:
            seg.roll_base_ms, seg.roll_by_timestamp = roll_base(first_max_ts, self._clock_ms)
        if position + n > seg.reserved_end:
            seg.reserve_for(position + n)
        return seg, position

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

    # ------------------------------------------------------------------ durability

    def flush(self) -> int:
        """fdatasync everything written so far; returns the durable end offset.

        Safe to call from one other thread while the owner thread appends. Afterwards, when
        a segment rolled or the throttle allows (see the module docstring), moves the recovery
        point to the offset this flush made durable.
        """
        with self._flush_lock:
            return self._flush()

    def _flush(self) -> int:
        fds: list[int] = []
        with self._lock:
            if self._closed:
                return self._durable_offset
            self._check_not_fenced()
            target = self._next_offset
            active = self._segments[-1]
            appended = self._appended_before_active + active.size
            dirty = list(self._dirty)
            if self._active_dirty:
                dirty.append(active)
            index_paths = self._unsynced_index_paths
            dir_dirty = self._dir_dirty
            try:
                for seg in dirty:
                    fds.append(os.dup(seg.fd))
            except OSError as exc:
                for fd in fds:
                    os.close(fd)
                raise StorageError(f"cannot sync log {self.path}: {exc}", errno=exc.errno) from exc
            self._dirty.clear()
            self._active_dirty = False
            self._unsynced_index_paths = []
            self._dir_dirty = False
        try:
            for fd in fds:
                os.fdatasync(fd)
            for path in index_paths:
                _fsync_path(path)
            if dir_dirty:
                fsync_dir(self.path)
        except OSError as exc:
            self._fence(exc)
        finally:
            for fd in fds:
                os.close(fd)
        with self._lock:
            if target > self._durable_offset:
                self._durable_offset = target
        if target > self._recovery_point and (index_paths or self._checkpoint_due(appended)):
            try:
                if target > active.base_offset:
                    self._write_active_indexes(active, target)
                self._write_recovery_point(target, appended)
            except StorageError as exc:
                # The data is durable; only the shortcut for the next recovery is missing
                # (that recovery then verifies more). A later flush or close writes it again.
                _log.warning("log %s: recovery point not advanced: %s", self.path, exc)
        return self._durable_offset

    def _fence(self, exc: OSError) -> NoReturn:
        """After a failed fsync: fence the log (see ``_fenced``) and raise."""
        error = StorageError(
            f"log {self.path}: fsync failed ({exc}); what was written since the last good "
            f"flush (offsets from {self._durable_offset}) may not be on disk, so the log takes "
            f"no more appends until it is opened again (restart the broker)",
            errno=exc.errno,
        )
        with self._lock:
            self._fenced = error
        _log.error("%s", error)
        raise StorageError(str(error), errno=exc.errno) from exc

    def _checkpoint_due(self, appended: int) -> bool:
        """Whether the throttle lets a flush move the recovery point inside a segment."""
        cfg = self.config
        every_bytes = cfg.recovery_point_interval_bytes
        if every_bytes is not None and appended - self._checkpoint_bytes >= every_bytes:
            return True
        every_ms = cfg.recovery_point_interval_ms
        if every_ms is None:
            return False
        elapsed = self._clock_ms() - self._checkpoint_ms
        return elapsed >= every_ms or elapsed < 0  # < 0: the wall clock stepped back

    def _write_active_indexes(self, seg: LogSegment, below: int) -> None:
        """Write and fsync ``seg``'s index files with the entries below ``below``, unless the
        owner has written them whole since (the segment rolled, or the log is closing)."""
        try:
            with self._index_files_lock:
                if self._indexes_final or seg is not self._segments[-1]:
                    return
                seg.index.write(below)
                seg.time_index.write(below)
            _fsync_path(seg.index.path)
            _fsync_path(seg.time_index.path)
        except OSError as exc:
            raise StorageError(f"cannot write indexes of {seg.path}: {exc}",
                               errno=exc.errno) from exc

    def _write_recovery_point(self, offset: int, appended: int) -> None:
        with self._checkpoint_lock:
            if offset > self._recovery_point:
                write_checkpoint(os.path.join(self.path, RECOVERY_POINT_FILE), offset)
                self._recovery_point = offset
                self._checkpoint_bytes = appended
                self._checkpoint_ms = self._clock_ms()

    # ------------------------------------------------------------------ reading

    def read(self, offset: int, max_bytes: int, *, max_offset: int | None = None) -> bytes:
        """Whole batches from the one containing ``offset``, up to ``max_bytes`` (at least one
        batch), none holding an offset at or past ``max_offset``."""
        self._check_open()
        if offset < self._log_start_offset or offset > self._next_offset:
            raise OffsetOutOfRangeError(
                f"offset {offset} outside [{self._log_start_offset}, {self._next_offset}]"
            )
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
        chunk_size = max(budget, 0) + 2 * self.config.index_interval_bytes + 4096
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

    # ------------------------------------------------------------------ deletion

    def delete_records_before(self, offset: int) -> None:
        """Make ``offset`` the first visible offset (persisted); drop segments wholly below."""
        self._check_open()
        if offset <= self._log_start_offset:
            return
        if offset > self._next_offset:
            raise OffsetOutOfRangeError(
                f"cannot delete up to {offset}: the log ends at {self._next_offset}"
            )
        self._set_log_start_offset(offset)
        self._delete_segments_below(offset)

    def enforce_retention(self, now_ms: int) -> int:
        """Delete whole segments past ``retention_ms`` or beyond ``retention_bytes``.

        Returns the number of segments deleted.
        """
        self._check_open()
        cfg = self.config
        doomed = 0
        size = self.size_bytes
        for seg in self._segments:
            if seg.is_empty:
                break
            expired = cfg.retention_ms is not None and seg.max_timestamp < now_ms - cfg.retention_ms
            oversized = cfg.retention_bytes is not None and size - seg.size >= cfg.retention_bytes
            if not (expired or oversized):
                break
            doomed += 1
            size -= seg.size
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
        write_checkpoint(os.path.join(self.path, LOG_START_OFFSET_FILE), offset)
        self._log_start_offset = offset

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

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"log {self.path} is closed")

    def _check_not_fenced(self) -> None:
        if self._fenced is not None:
            raise StorageError(str(self._fenced), errno=self._fenced.errno)

    @property
    def fenced(self) -> bool:
        """Whether an fsync failed, so that the log takes no more appends until reopened."""
        return self._fenced is not None


def _fsync_path(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return  # the segment was deleted since: nothing left to make durable
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
