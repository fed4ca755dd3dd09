"""Durability of a :class:`~wharf.storage.log.Log`: flushes, the recovery point, fencing.

How it works. Appends write into the page cache and mark what they touched dirty (the active
segment, segments rolled since the last flush, index files written at roll, the directory
after segments came or went, the log start offset after records were deleted). ``flush``
fdatasyncs all of it and reports the durable end offset. It may run on one other thread (the
group committer) while the owner thread appends: it takes its snapshot (dirty segments, target
offset) under the log's lock, releases it for the fsyncs (on duplicated file descriptors, so a
segment deleted meanwhile cannot pull its descriptor away), then publishes the new durable
offset under the lock again. Flushes run one at a time (``_flush_lock``); appends never wait
for them.

The recovery point follows the flushes: after a segment rolled, or when
``recovery_point_interval_bytes``/``recovery_point_interval_ms`` went by since it last moved,
the flushing thread writes the active segment's index files (entries below the flushed offset,
so the next recovery can start walking near the checkpoint), fsyncs them, then writes the
checkpoint with the offset that flush made durable. So a crash re-verifies at most about that
many bytes, and the checkpoint never names an offset that was not fsynced. The log start
offset checkpoint moved by deletions is written by the next flush too, so no fsync runs on the
thread that deletes.

A failed fsync *fences* the log: the kernel may have dropped the pages it could not write, and
a later fsync would then succeed without them. A fenced log takes no more appends and reports
nothing more as durable; opening it again (a restart) recovers it (see the loader).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

from wharf.errors import StorageError
from wharf.storage.checkpoint import fsync_dir, write_checkpoint
from wharf.storage.loader import LOG_START_OFFSET_FILE, RECOVERY_POINT_FILE
from wharf.storage.segment import LogSegment

if TYPE_CHECKING:
    from wharf.storage.log import LogConfig

__all__ = ["LogFlusher", "fsync_path"]

_log = logging.getLogger(__name__)


class LogFlusher:
    """The flush half of :class:`~wharf.storage.log.Log` (a mixin over the log's state)."""

    path: str
    _clock_ms: Callable[[], int]
    _segments: list[LogSegment]
    _next_offset: int
    _log_start_offset: int
    _durable_offset: int
    _recovery_point: int
    _appended_before_active: int
    _closed: bool
    _fenced: StorageError | None
    # Shared with the owner thread, guarded by _lock:
    _lock: threading.Lock
    _active_dirty: bool  # the active segment has writes a flush has not synced
    _dirty: set[LogSegment]  # older segments with such writes
    _unsynced_index_paths: list[str]
    _dir_dirty: bool
    _start_dirty: bool  # the log start offset moved since its checkpoint was written
    # One flush at a time, so that no flush reports (or checkpoints) an offset whose fsync
    # another flush is still running.
    _flush_lock: threading.Lock
    # Guards writes of the recovery point and what its throttle remembers:
    _checkpoint_lock: threading.Lock
    _checkpoint_bytes: int  # appended bytes covered by the last checkpoint
    _checkpoint_ms: int
    # Guards writing index files, which the owner (roll, close) and a flush may both do; a
    # flush writes the active segment's files only while _indexes_final is False.
    _index_files_lock: threading.Lock
    _indexes_final: bool
    _config: LogConfig

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
            start = self._log_start_offset if self._start_dirty else None
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
            self._start_dirty = False
        try:
            for fd in fds:
                os.fdatasync(fd)
            for path in index_paths:
                fsync_path(path)
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
        if start is not None:
            self._write_log_start_offset(start)
        if target > self._recovery_point and (index_paths or self._checkpoint_due(appended)):
            self._move_recovery_point(active, target, appended)
        return self._durable_offset

    def _move_recovery_point(self, active: LogSegment, target: int, appended: int) -> None:
        """After a flush made ``target`` durable: checkpoint it (see the module docstring)."""
        try:
            if target > active.base_offset:
                self._write_active_indexes(active, target)
            self._write_recovery_point(target, appended)
        except StorageError as exc:
            # The data is durable; only the shortcut for the next recovery is missing (that
            # recovery then verifies more). A later flush or close writes it again.
            _log.warning("log %s: recovery point not advanced: %s", self.path, exc)

    def _write_log_start_offset(self, offset: int) -> None:
        try:
            write_checkpoint(os.path.join(self.path, LOG_START_OFFSET_FILE), offset)
        except StorageError as exc:
            # Until it is written, a restart shows the deleted records again (retention or
            # the next deletion removes them); the next flush tries again.
            with self._lock:
                self._start_dirty = True
            _log.warning("log %s: log start offset not saved: %s", self.path, exc)

    def _fence(self, exc: OSError) -> NoReturn:
        """After a failed fsync: fence the log (see the module docstring) and raise."""
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
        every_bytes = self._config.recovery_point_interval_bytes
        if every_bytes is not None and appended - self._checkpoint_bytes >= every_bytes:
            return True
        every_ms = self._config.recovery_point_interval_ms
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
            fsync_path(seg.index.path)
            fsync_path(seg.time_index.path)
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

    def _check_not_fenced(self) -> None:
        if self._fenced is not None:
            raise StorageError(str(self._fenced), errno=self._fenced.errno)

    @property
    def fenced(self) -> bool:
        """Whether an fsync failed, so that the log takes no more appends until reopened."""
        return self._fenced is not None


def fsync_path(path: str) -> None:
    """fsync the file at ``path``; a file deleted meanwhile has nothing left to make durable."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
