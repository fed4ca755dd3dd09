"""Recovery: turn a log directory into segments that are safe to serve and to append to.

How it works. Two checkpoints guide the load:

* ``recovery-point``: every offset below it was fsynced. A segment that ends at or below it is
  *trusted*: only its index files are checked (and rebuilt if missing or damaged) and the tail
  after its last index entry is walked for structure, without CRCs.
* ``log-start-offset``: segments wholly below it are deleted.

From the recovery point on, every batch is verified (length, magic, CRC-32C, consecutive
offsets). The recovery point may fall inside a segment (a flush moved it while that segment
was active): that segment's walk starts at its last index entry below the recovery point
(checked against the batch it names) and checks structure only up to the recovery point. The
first invalid or incomplete batch is a torn tail: it and everything after it (including later
segments) are cut off, and the indexes are rebuilt.

Damage inside the trusted region is not a torn tail: it means fsynced data changed underneath
us. The loader then logs an error naming the file and position and refuses to open the log
(:class:`~wharf.errors.StorageError`); nothing is truncated, so an operator can inspect or move
the segment aside.

A new log (its directory made by the load) only makes its first segment's name durable. A log
found as a clean close leaves it (the recovery point at its end, nothing to cut, verify or
re-index) is served as it is, with no write and no fsync (one directory fsync when a roll made
its empty active segment), so opening many such logs costs only their reads. Otherwise, once loaded,
the verified tail of each segment is written again (the same bytes, read back) and the
recovered segments are fsynced; then the recovery point is moved to the end of the log, so the
next open trusts everything that is there now. Writing the tail again is what makes that fsync
mean something after a failed one: the kernel may have marked pages it could not write as
clean, still readable from the page cache but not on disk, and an fsync skips clean pages. The
tail is what the last checkpoint did not cover, at most about ``recovery_point_interval_bytes``
after a crash.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass

from wharf.errors import CorruptBatchError, StorageError
from wharf.storage.checkpoint import fsync_dir, read_checkpoint, write_checkpoint
from wharf.storage.record_batch import HEADER_SIZE, MAGIC, parse_header
from wharf.storage.segment import LogSegment, roll_base

__all__ = ["LOG_START_OFFSET_FILE", "RECOVERY_POINT_FILE", "LoadedLog", "LogLoader"]

_log = logging.getLogger(__name__)

RECOVERY_POINT_FILE = "recovery-point"
LOG_START_OFFSET_FILE = "log-start-offset"
_SEGMENT_NAME = re.compile(r"^(\d{20})\.(log|index|timeindex)$")
# Bytes read and written at a time when a verified tail is written again.
_REWRITE_CHUNK = 1 << 20


@dataclass(slots=True)
class LoadedLog:
    segments: list[LogSegment]
    log_start_offset: int
    recovery_point: int
    truncated_bytes: int
    verified_bytes: int
    # found as a clean close leaves it (not made by this load): closing it unchanged writes
    # nothing
    as_closed: bool = False


class LogLoader:
    """Loads (and if needed repairs) one log directory."""

    def __init__(self, directory: str, index_interval_bytes: int, now_ms: int) -> None:
        self.dir = directory
        self.index_interval_bytes = index_interval_bytes
        self.now_ms = now_ms
        self.truncated_bytes = 0
        self.verified_bytes = 0  # bytes of the batches whose CRC was checked
        # Per segment, the bytes at its end whose CRC was checked (written again on load).
        self.verified_tails: dict[LogSegment, int] = {}
        self._opened: list[LogSegment] = []
        self._created = False  # the directory or a segment file was made by this load
        self._fresh = False  # the directory was made by this load

    def load(self) -> LoadedLog:
        """Recover the directory and return its segments, open and ready for appends."""
        try:
            return self._load()
        except BaseException:
            for seg in self._opened:
                seg.close()
            raise

    def _open(self, seg: LogSegment, *, create: bool) -> None:
        seg.open(create=create)
        self._opened.append(seg)
        self._created = self._created or create

    def _load(self) -> LoadedLog:
        self._ensure_dir()
        rp_path = os.path.join(self.dir, RECOVERY_POINT_FILE)
        lso_path = os.path.join(self.dir, LOG_START_OFFSET_FILE)
        recovery_point = read_checkpoint(rp_path) or 0
        stored_lso = read_checkpoint(lso_path)
        bases = self._segment_bases()

        lso = stored_lso if stored_lso is not None else (bases[0] if bases else 0)
        while len(bases) >= 2 and bases[1] <= lso:
            LogSegment(self.dir, bases.pop(0), self.index_interval_bytes).delete_files()

        segments: list[LogSegment] = []
        rescanned: list[LogSegment] = []
        reindexed: list[LogSegment] = []
        for i, base in enumerate(bases):
            seg = LogSegment(self.dir, base, self.index_interval_bytes)
            self._open(seg, create=False)
            later = bases[i + 1 :]
            trusted = bool(later) and later[0] <= recovery_point
            if segments and base != segments[-1].next_offset:
                if trusted or segments[-1].next_offset < recovery_point:
                    self._refuse(
                        seg, 0, f"segment starts at {base}, previous ends at "
                        f"{segments[-1].next_offset}"
                    )
                _log.warning(
                    "log %s: segment %d does not follow the previous one (ends at %d); "
                    "deleting it and the %d segment(s) after it",
                    self.dir, base, segments[-1].next_offset, len(later),
                )
                seg.delete_files()
                self._delete_bases(later)
                break
            truncated, rebuilt = self._load_segment(seg, trusted, recovery_point)
            segments.append(seg)
            if not trusted:
                rescanned.append(seg)
            elif rebuilt:
                _log.warning("log %s: rebuilt the missing or damaged indexes of %s",
                             self.dir, seg.path)
                reindexed.append(seg)
            if truncated:
                if later:
                    _log.warning(
                        "log %s: deleting %d segment(s) after the torn tail", self.dir, len(later)
                    )
                    self._delete_bases(later)
                break

        if not segments:
            seg = LogSegment(self.dir, lso, self.index_interval_bytes)
            self._open(seg, create=True)
            segments.append(seg)
            rescanned.append(seg)
        lso = max(lso, segments[0].base_offset)
        if lso > segments[-1].next_offset:
            # Records up to the start offset were deleted but later ones were lost: start afresh
            # at the start offset so offsets never go back.
            _log.warning(
                "log %s: log start offset %d is past the recovered end %d; starting empty there",
                self.dir, lso, segments[-1].next_offset,
            )
            for seg in segments:
                seg.delete_files()
            seg = LogSegment(self.dir, lso, self.index_interval_bytes)
            self._open(seg, create=True)
            segments = [seg]
            rescanned = [seg]
            reindexed = []

        end = segments[-1].next_offset
        if self._fresh or self._unchanged(end, recovery_point, reindexed):
            return self._as_found(segments, lso, end)
        self._make_durable(segments, rescanned, reindexed)
        write_checkpoint(rp_path, end)
        if stored_lso != lso:
            write_checkpoint(lso_path, lso)
        return LoadedLog(segments, lso, end, self.truncated_bytes, self.verified_bytes)

    def _as_found(self, segments: list[LogSegment], lso: int, end: int) -> LoadedLog:
        """The log served as found: a clean close left everything below the durable recovery
        point already; a new directory, or an empty active segment made by a roll (whose name
        the roll did not make durable), needs only the directory fsynced (no checkpoint yet
        reads as offset 0 for both). An empty first segment at offset 0 was made by the load
        that made the directory, which fsynced it."""
        active = segments[-1]
        if self._fresh or (active.size == 0 and active.base_offset > 0):
            try:
                fsync_dir(self.dir)
            except OSError as exc:
                raise StorageError(f"cannot sync log {self.dir}: {exc}", errno=exc.errno) from exc
        return LoadedLog(segments, lso, end, 0, 0, as_closed=not self._fresh)

    def _unchanged(self, end: int, recovery_point: int, reindexed: list[LogSegment]) -> bool:
        """Whether the load found the log as a clean close left it: the recovery point at its
        end (every byte fsynced before it moved there), nothing cut, verified, created or
        re-indexed. Such a log needs no write to be served."""
        return (
            end == recovery_point
            and self.truncated_bytes == 0
            and self.verified_bytes == 0
            and not self._created
            and not reindexed
        )

    # ------------------------------------------------------------------ steps

    def _ensure_dir(self) -> None:
        try:
            if not os.path.isdir(self.dir):
                os.makedirs(self.dir, exist_ok=True)
                fsync_dir(os.path.dirname(os.path.abspath(self.dir)))
                self._created = self._fresh = True
            for name in os.listdir(self.dir):
                if name.endswith(".tmp"):
                    os.unlink(os.path.join(self.dir, name))
        except OSError as exc:
            raise StorageError(f"cannot prepare log directory {self.dir}: {exc}",
                               errno=exc.errno) from exc

    def _segment_bases(self) -> list[int]:
        logs: set[int] = set()
        others: list[tuple[int, str]] = []
        for name in os.listdir(self.dir):
            m = _SEGMENT_NAME.match(name)
            if m is None:
                continue
            base = int(m.group(1))
            if m.group(2) == "log":
                logs.add(base)
            else:
                others.append((base, name))
        for base, name in others:
            if base not in logs:
                os.unlink(os.path.join(self.dir, name))
        return sorted(logs)

    def _delete_bases(self, bases: list[int]) -> None:
        for base in bases:
            LogSegment(self.dir, base, self.index_interval_bytes).delete_files()

    def _refuse(self, seg: LogSegment, position: int, reason: str) -> None:
        _log.error(
            "log %s: segment %s is damaged below the recovery point at position %d (%s); "
            "refusing to open the log, nothing was truncated",
            self.dir, seg.path, position, reason,
        )
        raise StorageError(
            f"segment {seg.path} is damaged below the recovery point at position {position}: "
            f"{reason}"
        )

    def _index_start(self, seg: LogSegment, trusted: bool, verify_from: int) -> int | None:
        """Position of a verified index entry to start walking from, or None for position 0."""
        entry = seg.index.last() if trusted else seg.index.floor(verify_from - 1)
        if entry is None:
            return None
        offset, position = entry
        if seg.size - position < HEADER_SIZE:
            return None
        header = parse_header(seg.pread(position, HEADER_SIZE))
        if header.magic != MAGIC or header.base_offset != offset:
            return None
        seg.index.truncate_after(offset)
        seg.time_index.truncate_after(offset)
        seg.max_timestamp = seg.time_index.max_timestamp_before(offset)
        return position

    def _load_segment(
        self, seg: LogSegment, trusted: bool, recovery_point: int
    ) -> tuple[bool, bool]:
        """Walk the segment, rebuilding what is needed.

        Returns ``(truncated, index_rebuilt)``: whether a torn tail was cut off, and whether the
        index files were missing or damaged and have been rebuilt in memory.
        """
        verify_from = None if trusted else max(recovery_point, seg.base_offset)
        rebuilt = not (seg.index.load(seg.size) and seg.time_index.load(seg.size))
        start = None if rebuilt else self._index_start(seg, trusted, verify_from or 0)
        for attempt_start in (start, None) if start is not None else (None,):
            if attempt_start is None:
                seg.index.clear()
                seg.time_index.clear()
                seg.max_timestamp = -1
                expected, position = seg.base_offset, 0
            else:
                entry = seg.index.last()
                assert entry is not None
                expected, position = entry
            seg.index_due = position + seg.index_interval_bytes
            verified = 0
            try:
                for pos, header, _chunk, _cs in seg.scan(
                    position, seg.size, verify_from_offset=verify_from
                ):
                    if header.base_offset != expected:
                        raise CorruptBatchError(
                            f"batch at position {pos} has base offset {header.base_offset}, "
                            f"expected {expected}"
                        )
                    seg.note_batch(pos, header.base_offset, header.max_timestamp)
                    if verify_from is not None and header.base_offset >= verify_from:
                        verified += header.size
                    expected = header.last_offset + 1
                    position = pos + header.size
            except CorruptBatchError as exc:
                if verify_from is not None and expected >= verify_from:
                    self.verified_bytes += verified
                    self.verified_tails[seg] = verified
                    self._truncate(seg, position, expected, exc)
                    seg.next_offset = expected
                    self._set_roll_base(seg)
                    return True, True
                if attempt_start is not None:
                    rebuilt = True
                    continue  # the index may have misled us: walk again from the start
                self._refuse(seg, position, str(exc))
            self.verified_bytes += verified
            self.verified_tails[seg] = verified
            seg.next_offset = expected
            self._set_roll_base(seg)
            return False, rebuilt
        raise AssertionError("unreachable")

    def _truncate(self, seg: LogSegment, position: int, offset: int, why: Exception) -> None:
        cut = seg.size - position
        _log.warning(
            "log %s: torn tail in %s at position %d (offset %d): %s; truncating %d byte(s)",
            self.dir, seg.path, position, offset, why, cut,
        )
        try:
            os.ftruncate(seg.fd, position)
        except OSError as exc:
            raise StorageError(f"cannot truncate {seg.path}: {exc}", errno=exc.errno) from exc
        seg.size = position
        self.truncated_bytes += cut

    def _set_roll_base(self, seg: LogSegment) -> None:
        if seg.size < HEADER_SIZE:
            return  # empty: its first append sets the roll base
        first = parse_header(seg.pread(0, HEADER_SIZE))
        seg.roll_base_ms, seg.roll_by_timestamp = roll_base(first.max_timestamp,
                                                            lambda: self.now_ms)

    def _make_durable(
        self, segments: list[LogSegment], rescanned: list[LogSegment], reindexed: list[LogSegment]
    ) -> None:
        try:
            for seg in reindexed:
                seg.write_indexes()
                _fsync_path(seg.index.path)
                _fsync_path(seg.time_index.path)
            for seg in rescanned:
                self._write_again(seg, self.verified_tails.get(seg, 0))
                os.fdatasync(seg.fd)
                seg.write_indexes()
                if seg is not segments[-1]:
                    # A rolled segment becomes trusted: its indexes must be durable. The active
                    # segment's index files are only a head start for the next recovery.
                    _fsync_path(seg.index.path)
                    _fsync_path(seg.time_index.path)
            fsync_dir(self.dir)
        except OSError as exc:
            raise StorageError(f"cannot sync log {self.dir}: {exc}", errno=exc.errno) from exc


    def _write_again(self, seg: LogSegment, tail: int) -> None:
        """Write the last ``tail`` bytes of ``seg`` again, as they read now (see above)."""
        position = seg.size - tail
        while position < seg.size:
            chunk = seg.pread(position, min(_REWRITE_CHUNK, seg.size - position))
            view = memoryview(chunk)
            while view:
                written = os.pwrite(seg.fd, view, position)
                view = view[written:]
                position += written


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
