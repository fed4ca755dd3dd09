"""Sparse per-segment indexes: offset -> file position, and timestamp -> offset.

Both live in memory as two parallel arrays, public so that a segment's append bookkeeping
(``LogSegment.note_batch``, once per append) can add entries without a call per index. They are
written to their files whole when a segment is rolled or the log is closed, and (the entries
below the new recovery point) when the log moves its recovery point inside the active segment;
the files are a cache. Every loaded file is
checked (entry size, order, range) and a damaged or missing one is rebuilt from the segment's
batches.

``.index`` entries (8 bytes): relative offset u32, position u32.
``.timeindex`` entries (12 bytes): timestamp i64, relative offset u32. An entry ``(T, o)`` says
that every batch before offset ``o`` in the segment has a max timestamp <= ``T``.
"""

from __future__ import annotations

import os
import struct
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterator

__all__ = ["OffsetIndex", "TimeIndex"]

_OFFSET_ENTRY = struct.Struct(">II")
_TIME_ENTRY = struct.Struct(">qI")


def _read_file(path: str, limit: int) -> bytes | None:
    """Whole file, or None if it is missing or larger than ``limit`` bytes."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > limit:
                return None
            return f.read(size)
    except FileNotFoundError:
        return None


def _write_file(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


class OffsetIndex:
    """Sparse map from absolute offset to the file position of the batch starting there."""

    __slots__ = ("path", "base_offset", "offsets", "positions")

    def __init__(self, path: str, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self.offsets = array("Q")
        self.positions = array("Q")

    def __len__(self) -> int:
        return len(self.offsets)

    def append(self, offset: int, position: int) -> None:
        self.offsets.append(offset)
        self.positions.append(position)

    def clear(self) -> None:
        del self.offsets[:]
        del self.positions[:]

    def floor(self, offset: int) -> tuple[int, int] | None:
        """The last entry ``(offset, position)`` with entry offset <= ``offset``."""
        i = bisect_right(self.offsets, offset) - 1
        if i < 0:
            return None
        return self.offsets[i], self.positions[i]

    def last(self) -> tuple[int, int] | None:
        if not self.offsets:
            return None
        return self.offsets[-1], self.positions[-1]

    def entries(self) -> Iterator[tuple[int, int]]:
        """Every ``(offset, position)`` entry, in order."""
        return zip(self.offsets, self.positions, strict=True)

    def truncate_after(self, offset: int) -> None:
        """Drop entries for offsets greater than ``offset``."""
        i = bisect_right(self.offsets, offset)
        del self.offsets[i:]
        del self.positions[i:]

    def load(self, log_size: int) -> bool:
        """Read the file; keep it only if it is well formed for a log of ``log_size`` bytes."""
        self.clear()
        data = _read_file(self.path, (log_size // 12 + 1) * _OFFSET_ENTRY.size)
        if data is None or len(data) % _OFFSET_ENTRY.size:
            return False
        prev_rel = -1
        prev_pos = -1
        for rel, pos in _OFFSET_ENTRY.iter_unpack(data):
            if rel <= prev_rel or pos <= prev_pos or pos >= log_size:
                self.clear()
                return False
            self.append(self.base_offset + rel, pos)
            prev_rel, prev_pos = rel, pos
        return True

    def write(self, below: int | None = None) -> None:
        """Write the file: every entry, or those for offsets below ``below``.

        Another thread may call this while the owner appends: the arrays are copied first
        (each copy is one step under the GIL) and only the entries below ``below``, which
        existed before either copy, are kept.
        """
        offsets = self.offsets[:]
        positions = self.positions[:]
        n = min(len(offsets), len(positions))
        if below is not None:
            n = min(n, bisect_left(offsets, below))
        base = self.base_offset
        fields = [0] * (2 * n)
        fields[0::2] = [off - base for off in offsets[:n]]
        fields[1::2] = positions[:n]
        _write_file(self.path, struct.pack(f">{2 * n}I", *fields))


class TimeIndex:
    """Sparse map from timestamp to the first offset that may hold a later timestamp."""

    __slots__ = ("path", "base_offset", "stamps", "offsets")

    def __init__(self, path: str, base_offset: int) -> None:
        self.path = path
        self.base_offset = base_offset
        self.stamps = array("q")
        self.offsets = array("Q")

    def __len__(self) -> int:
        return len(self.stamps)

    def append(self, timestamp: int, offset: int) -> None:
        """Record that all batches before ``offset`` have timestamps <= ``timestamp``."""
        if self.stamps and timestamp <= self.stamps[-1]:
            return
        self.stamps.append(timestamp)
        self.offsets.append(offset)

    def clear(self) -> None:
        del self.stamps[:]
        del self.offsets[:]

    def start_offset(self, timestamp: int) -> int:
        """An offset at or before the first record with a timestamp >= ``timestamp``."""
        i = bisect_right(self.stamps, timestamp - 1) - 1
        if i < 0:
            return self.base_offset
        return self.offsets[i]

    def max_timestamp_before(self, offset: int) -> int:
        """The largest timestamp known to occur before ``offset`` (-1 if none)."""
        i = bisect_right(self.offsets, offset) - 1
        if i < 0:
            return -1
        return self.stamps[i]

    def truncate_after(self, offset: int) -> None:
        i = bisect_right(self.offsets, offset)
        del self.stamps[i:]
        del self.offsets[i:]

    def load(self, log_size: int) -> bool:
        self.clear()
        data = _read_file(self.path, (log_size // 12 + 1) * _TIME_ENTRY.size)
        if data is None or len(data) % _TIME_ENTRY.size:
            return False
        prev_ts = -(1 << 63)
        prev_rel = -1
        for ts, rel in _TIME_ENTRY.iter_unpack(data):
            if ts <= prev_ts or rel < prev_rel:
                self.clear()
                return False
            self.stamps.append(ts)
            self.offsets.append(self.base_offset + rel)
            prev_ts, prev_rel = ts, rel
        return True

    def write(self, below: int | None = None) -> None:
        """Write the file: every entry, or those for offsets below ``below`` (see
        :meth:`OffsetIndex.write` for writing while the owner appends)."""
        offsets = self.offsets[:]
        stamps = self.stamps[:]
        n = min(len(offsets), len(stamps))
        if below is not None:
            n = min(n, bisect_left(offsets, below))
        base = self.base_offset
        fields: list[int] = [0] * (2 * n)
        fields[0::2] = stamps[:n]
        fields[1::2] = [off - base for off in offsets[:n]]
        _write_file(self.path, struct.pack(">" + "qI" * n, *fields))
