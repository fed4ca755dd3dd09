"""An append-only journal of small records: the codec and the file.

A record on disk is ``u32 length | u32 crc32(payload) | payload`` (big-endian); a payload is
never empty, so a length of 0 marks the end. Reading stops there, or at the first record that
is incomplete or whose checksum does not match: a crash while appending leaves at most a torn
tail, and :meth:`JournalFile.open` truncates it (and fsyncs), keeping every record before it.

:class:`JournalFile` buffers nothing: :meth:`JournalFile.append` writes to the page cache and
:meth:`JournalFile.sync` makes it durable (``fdatasync``); both block, so callers on an event
loop run them on a worker thread, one at a time. Creating a journal fsyncs its directory, so
the new name is durable before anything written to it is reported durable.

The file is grown ahead of its records (``posix_fallocate`` in steps of :data:`RESERVE_BYTES`,
which reads back as zeros: the end marker). An append then writes inside the file without
changing its size, so its fdatasync has no size to journal: on ext4 on this project's VM a
small append + fdatasync took 112 µs into a growing file and 80 µs into an allocated one, and
every durable declare, binding or topic change waits for one. Where the filesystem cannot
allocate, appends grow the file as before. (:func:`wharf.storage.preallocate.reserve`, which
segments use, keeps the file's size, so each append still grows it: measured, no gain here.)
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

from wharf.errors import StorageError
from wharf.storage.checkpoint import fsync_dir

__all__ = [
    "HEADER_SIZE",
    "RESERVE_BYTES",
    "JournalFile",
    "decode_records",
    "encode_record",
    "read_journal",
]

_HEADER = struct.Struct(">II")
HEADER_SIZE = _HEADER.size
# A larger length can only be garbage from a torn write (a record is one definition).
_MAX_RECORD = 64 << 20
# How far ahead of its records a journal file is allocated.
RESERVE_BYTES = 1 << 20


def encode_record(payload: bytes) -> bytes:
    """One record framing ``payload`` (ValueError when empty: a zero length is the end)."""
    if not payload:
        raise ValueError("a journal record cannot be empty")
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def decode_records(data: bytes | memoryview) -> tuple[list[bytes], int]:
    """The payloads of the whole records at the start of ``data``, and where they end (the
    first byte of the end marker or of a torn or damaged tail, ``len(data)`` when there is
    none)."""
    view = memoryview(data)
    payloads: list[bytes] = []
    pos = 0
    while len(view) - pos >= HEADER_SIZE:
        length, crc = _HEADER.unpack_from(view, pos)
        end = pos + HEADER_SIZE + length
        if length == 0 or length > _MAX_RECORD or end > len(view):
            break
        payload = bytes(view[pos + HEADER_SIZE : end])
        if zlib.crc32(payload) != crc:
            break
        payloads.append(payload)
        pos = end
    return payloads, pos


class JournalFile:
    """One journal file opened for appending; see the module docstring."""

    def __init__(self, path: Path, fd: int, size: int) -> None:
        self.path = path
        self._fd = fd
        self.size = size  # bytes of whole records written
        self._allocated = size  # the file's size: records, then zeros

    @classmethod
    def create(cls, path: Path) -> JournalFile:
        """A new empty journal at ``path`` (replacing any file there), its name durable."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                fsync_dir(str(path.parent))
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            raise StorageError(f"cannot create {path}: {exc}", errno=exc.errno) from exc
        return cls(path, fd, 0)

    @classmethod
    def open(cls, path: Path) -> tuple[JournalFile, list[bytes]]:
        """Open the journal at ``path`` (created if absent) and read its records, cutting off
        a torn tail durably."""
        if not path.exists():
            return cls.create(path), []
        try:
            data = path.read_bytes()
            payloads, end = decode_records(data)
            fd = os.open(path, os.O_WRONLY)
            try:
                if end < len(data):  # a torn tail or the zeros allocated ahead: gone
                    os.ftruncate(fd, end)
                    os.fsync(fd)
            except BaseException:
                os.close(fd)
                raise
        except OSError as exc:
            raise StorageError(f"cannot open {path}: {exc}", errno=exc.errno) from exc
        return cls(path, fd, end), payloads

    def append(self, data: bytes) -> None:
        """Write ``data`` (whole records) after the records, not yet durably."""
        end = self.size + len(data)
        if end > self._allocated:
            self._allocate(end + RESERVE_BYTES)
        try:
            view = memoryview(data)
            at = self.size
            while view:
                written = os.pwrite(self._fd, view, at)
                view, at = view[written:], at + written
        except OSError as exc:
            raise StorageError(f"cannot write {self.path}: {exc}", errno=exc.errno) from exc
        self.size = end

    def _allocate(self, size: int) -> None:
        """Grow the file to ``size`` bytes of zeros after the records; when the filesystem
        refuses (no support, no space), leave it and let the appends grow it."""
        try:
            os.posix_fallocate(self._fd, self._allocated, size - self._allocated)
            self._allocated = size
        except OSError:
            try:  # a refusal may have grown it part way: zeros all the same
                self._allocated = max(self.size, os.fstat(self._fd).st_size)
            except OSError:
                pass

    def sync(self) -> None:
        """Make everything appended durable."""
        try:
            os.fdatasync(self._fd)
        except OSError as exc:
            raise StorageError(f"cannot fsync {self.path}: {exc}", errno=exc.errno) from exc

    def close(self) -> None:
        os.close(self._fd)


def read_journal(path: Path) -> list[bytes]:
    """The records of the journal at ``path`` up to any torn tail, without changing it (none
    when it does not exist)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}", errno=exc.errno) from exc
    return decode_records(data)[0]
