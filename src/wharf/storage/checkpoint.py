"""Small files holding one offset, replaced atomically.

A checkpoint is written to a temporary file, fsynced, renamed over the old one and the directory
is fsynced, so after a crash the file holds either the old or the new value, never a mix.
The content is ``"<version> <offset>\\n"`` in ASCII.
"""

from __future__ import annotations

import logging
import os

from wharf.errors import StorageError

__all__ = ["fsync_dir", "read_checkpoint", "write_checkpoint"]

_log = logging.getLogger(__name__)
_VERSION = 0
_MAX_SIZE = 64


def fsync_dir(path: str) -> None:
    """Make the directory entries of ``path`` (creations, renames, deletions) durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_checkpoint(path: str, value: int) -> None:
    tmp = path + ".tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, f"{_VERSION} {value}\n".encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_dir(os.path.dirname(path) or ".")
    except OSError as exc:
        raise StorageError(f"cannot write checkpoint {path}: {exc}", errno=exc.errno) from exc


def read_checkpoint(path: str) -> int | None:
    """The stored offset, or None if the file is missing or unreadable (logged)."""
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_SIZE + 1)
    except FileNotFoundError:
        return None
    try:
        version, value = raw.decode("ascii").split()
        if int(version) != _VERSION or len(raw) > _MAX_SIZE:
            raise ValueError(f"unknown checkpoint version {version}")
        offset = int(value)
        if offset < 0:
            raise ValueError("negative offset")
    except ValueError as exc:
        _log.error("ignoring unreadable checkpoint %s (%r): %s", path, raw[:_MAX_SIZE], exc)
        return None
    return offset
