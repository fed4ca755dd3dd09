"""One segment of a log: a ``.log`` file of back-to-back batches plus its two sparse indexes.

A segment knows its base offset (its file name), its size in bytes, the next offset after its
last batch and the largest batch timestamp. The log writes with ``pwritev`` at the segment's
size, so a failed or partial write is simply cut back with ``ftruncate`` and leaves no trace.
Once a segment holds a mebibyte, the log reserves its blocks ahead of the appends (as much
again as it holds, at most 4 MiB; see :mod:`wharf.storage.preallocate`) and gives back what
is left when the segment rolls, the log closes or is opened again. Scans read the file in
chunks and look only at the header fields they need.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterator
from typing import NamedTuple, NoReturn

from wharf.errors import CorruptBatchError, StorageError
from wharf.storage import preallocate
from wharf.storage.index import OffsetIndex, TimeIndex
from wharf.storage.record_batch import (
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    MIN_BATCH_LENGTH,
    check_header,
    parse_header,
    validate_batch,
)

__all__ = ["BatchSpan", "LogSegment", "segment_file_name"]

# Bytes read from a segment file at a time when scanning batch headers.
READ_CHUNK = 256 * 1024
# The indexes store offsets relative to the segment base and file positions as u32; both are
# kept below 2**31, as Kafka does.
MAX_RELATIVE_OFFSET = (1 << 31) - 1
MAX_SEGMENT_POSITION = (1 << 31) - 1
# Buffers per pwritev call (Linux IOV_MAX is 1024).
MAX_IOV = 1024
# Blocks are reserved ahead of appends once a segment holds RESERVE_FROM bytes: as many bytes
# as it holds, at most RESERVE_MAX, so a small log never holds much more disk than data.
RESERVE_FROM = 1 << 20
RESERVE_MAX = 4 << 20
# Blocks past the end of a segment found on opening it that are worth giving back.
_LEFTOVER_RESERVATION = 64 << 10


# base_offset, batch_length, magic, last_offset_delta, max_timestamp (see record_batch's layout).
_SCAN_FIELDS = struct.Struct(">qi4xb6xi8xq")


class BatchSpan(NamedTuple):
    """Where a stored batch sits in the offset space, as a segment scan reports it."""

    base_offset: int
    size: int
    last_offset: int
    max_timestamp: int


def roll_base(first_max_timestamp: int, clock_ms: Callable[[], int]) -> tuple[int, bool]:
    """What a segment's age counts from, as Kafka does: the max timestamp of its first batch
    (``(ts, True)``: the age of a later append is that append's max timestamp minus it), or, for
    a batch without timestamps, the wall clock (``(now, False)``: the age is now minus it).
    Both are rebuilt from the data when a log is opened, so a reopened log rolls as a live one.
    """
    if first_max_timestamp >= 0:
        return first_max_timestamp, True
    return clock_ms(), False


def segment_file_name(base_offset: int, suffix: str) -> str:
    return f"{base_offset:020d}{suffix}"


class LogSegment:
    """A ``<base>.log`` file with its ``.index`` and ``.timeindex``."""

    __slots__ = (
        "base_offset",
        "dir",
        "path",
        "fd",
        "size",
        "next_offset",
        "max_timestamp",
        "index",
        "time_index",
        "index_due",
        "roll_base_ms",
        "roll_by_timestamp",
        "index_interval_bytes",
        "reserved_end",
    )

    def __init__(self, directory: str, base_offset: int, index_interval_bytes: int) -> None:
        self.base_offset = base_offset
        self.dir = directory
        self.path = os.path.join(directory, segment_file_name(base_offset, ".log"))
        self.index = OffsetIndex(
            os.path.join(directory, segment_file_name(base_offset, ".index")), base_offset
        )
        self.time_index = TimeIndex(
            os.path.join(directory, segment_file_name(base_offset, ".timeindex")), base_offset
        )
        self.fd = -1
        self.size = 0
        self.next_offset = base_offset
        self.max_timestamp = -1
        self.index_interval_bytes = index_interval_bytes
        # The next batch at or past this position gets index entries.
        self.index_due = index_interval_bytes
        # What the segment's age counts from (for rolling; see roll_base): set by its first batch.
        self.roll_base_ms = 0
        self.roll_by_timestamp = True
        # File position up to which blocks are reserved (see reserve_for).
        self.reserved_end = 0

    # ------------------------------------------------------------------ files

    def open(self, *, create: bool) -> None:
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        try:
            self.fd = os.open(self.path, flags, 0o644)
            stat = os.fstat(self.fd)
            self.size = stat.st_size
            if stat.st_blocks * 512 - stat.st_size >= _LEFTOVER_RESERVATION:
                # Space reserved before a crash, never used: give it back.
                preallocate.release(self.fd, self.size)
        except OSError as exc:
            raise StorageError(f"cannot open segment {self.path}: {exc}", errno=exc.errno) from exc

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def delete_files(self) -> None:
        self.close()
        for path in (self.path, self.index.path, self.time_index.path):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def write_indexes(self) -> None:
        self.index.write()
        self.time_index.write()

    # ------------------------------------------------------------------ writing

    @property
    def is_empty(self) -> bool:
        return self.size == 0

    def reserve_for(self, end: int) -> None:
        """Reserve blocks for appends up to and past ``end`` (an append is about to pass
        ``reserved_end``). A failed reservation is not retried before ``end`` doubles."""
        if end < RESERVE_FROM:
            return
        target = end + min(end, RESERVE_MAX)
        preallocate.reserve(self.fd, self.size, target - self.size)
        self.reserved_end = target

    def release_reserved(self) -> None:
        """Give back the blocks reserved past the segment's size."""
        if self.reserved_end > self.size:
            try:
                preallocate.release(self.fd, self.size)
            except OSError as exc:
                raise StorageError(
                    f"cannot release reserved space of {self.path}: {exc}", errno=exc.errno
                ) from exc
        self.reserved_end = 0

    def finish_write(self, pieces: list[bytes | memoryview], total: int, written: int) -> None:
        """Complete a write of ``pieces`` (``total`` bytes) at the end of the file of which
        only ``written`` bytes went in; see :meth:`write_failed` for a failure."""
        rest = memoryview(b"".join(pieces))
        start = self.size
        try:
            while written < total:
                written += os.pwrite(self.fd, rest[written:], start + written)
        except OSError as exc:
            self.write_failed(written, total, exc)

    def write_failed(self, written: int, total: int, exc: OSError) -> NoReturn:
        """Cut the file back to its size before a write of ``total`` bytes that failed after
        ``written`` and raise :class:`StorageError`."""
        try:
            os.ftruncate(self.fd, self.size)
        except OSError:
            # The bytes past ``size`` are never read and are overwritten by the next append;
            # recovery would drop them as a torn tail.
            pass
        raise StorageError(
            f"write to {self.path} failed after {written} of {total} bytes: {exc}",
            errno=exc.errno,
        ) from exc

    def note_batch(self, position: int, base_offset: int, max_ts: int) -> None:
        """Account for a batch now stored at ``position`` (indexes, timestamps)."""
        if position >= self.index_due:
            # OffsetIndex.append and TimeIndex.append, inline (this runs once per append).
            self.index.offsets.append(base_offset)
            self.index.positions.append(position)
            times = self.time_index
            if not times.stamps or self.max_timestamp > times.stamps[-1]:
                times.stamps.append(self.max_timestamp)
                times.offsets.append(base_offset)
            self.index_due = position + self.index_interval_bytes
        if max_ts > self.max_timestamp:
            self.max_timestamp = max_ts

    def rebuild_indexes(self) -> None:
        """Rebuild both indexes (and the max timestamp) by walking every batch header."""
        self.index.clear()
        self.time_index.clear()
        self.max_timestamp = -1
        self.index_due = self.index_interval_bytes
        for pos, header, _chunk, _cs in self.scan(0, self.size):
            self.note_batch(pos, header.base_offset, header.max_timestamp)

    def index_is_consistent(self) -> bool:
        """Whether every offset-index entry names the start of the batch it claims."""
        for offset, position in self.index.entries():
            if self.size - position < HEADER_SIZE:
                return False
            base, _length, magic, _delta, _max_ts = _SCAN_FIELDS.unpack_from(
                self.pread(position, _SCAN_FIELDS.size)
            )
            if magic != MAGIC or base != offset:
                return False
        return True

    def start_position(self, offset: int) -> tuple[int, int]:
        """``(position, base offset)`` of an indexed batch at or before ``offset``."""
        entry = self.index.floor(offset)
        if entry is None:
            return 0, self.base_offset
        return entry[1], entry[0]

    # ------------------------------------------------------------------ reading

    def pread(self, position: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``position`` (within the segment's size)."""
        out = os.pread(self.fd, length, position)
        if len(out) == length:
            return out
        parts = [out]
        got = len(out)
        while got < length:
            more = os.pread(self.fd, length - got, position + got)
            if not more:
                raise StorageError(
                    f"{self.path} is shorter than expected ({position + got} < "
                    f"{position + length})"
                )
            parts.append(more)
            got += len(more)
        return b"".join(parts)

    def scan(
        self,
        position: int,
        end: int,
        *,
        verify_from_offset: int | None = None,
        chunk_size: int = READ_CHUNK,
    ) -> Iterator[tuple[int, BatchSpan, bytes, int]]:
        """Walk the batches between ``position`` and ``end``.

        Yields ``(position, span, chunk, chunk_start)``: ``chunk`` is a buffer holding at least
        the header, read from file position ``chunk_start``. Batches whose base offset is at or
        past ``verify_from_offset`` are verified in full (CRC); others are checked for structure
        only. Raises :class:`CorruptBatchError` at the first bad or incomplete batch.
        """
        chunk = b""
        chunk_start = position
        unpack = _SCAN_FIELDS.unpack_from
        while position < end:
            rel = position - chunk_start
            remaining = end - position
            if len(chunk) - rel < HEADER_SIZE:
                if remaining < HEADER_SIZE:
                    raise CorruptBatchError(
                        f"incomplete batch header at position {position}: "
                        f"only {remaining} bytes remain"
                    )
                chunk = self.pread(position, min(chunk_size, remaining))
                chunk_start, rel = position, 0
            base, length, magic, delta, max_ts = unpack(chunk, rel)
            size = length + LOG_OVERHEAD
            if magic != MAGIC or length < MIN_BATCH_LENGTH or size > remaining or delta < 0:
                check_header(parse_header(chunk, rel), remaining, remaining)  # raises
            if verify_from_offset is not None and base >= verify_from_offset:
                if len(chunk) - rel < size:
                    chunk = self.pread(position, max(size, min(chunk_size, remaining)))
                    chunk_start, rel = position, 0
                validate_batch(chunk, rel, max_batch_bytes=size)
            yield position, BatchSpan(base, size, base + delta, max_ts), chunk, chunk_start
            position += size
