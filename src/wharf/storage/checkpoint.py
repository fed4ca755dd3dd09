"""Small files replaced atomically, and checkpoints: such files holding one offset.

:func:`replace_file` writes a temporary file, fsyncs it, renames it over the old one and fsyncs
the directory, so after a crash the file holds either the old or the new content, never a mix.
Every small file Wharf rewrites goes through it (checkpoints, the topic catalogue, the queue
definitions, producer-state snapshots). A checkpoint's content is ``"<version> <offset>\\n"``
in ASCII.
"""

from __future__ import annotations

import logging
import os

from wharf.errors import StorageError

__all__ = ["fsync_dir", "read_checkpoint", "replace_file", "write_checkpoint"]

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


def replace_file(path: str | os.PathLike[str], data: bytes, *, mode: int = 0o644) -> None:
    """Replace ``path`` with ``data`` atomically and durably (blocks on the disk: callers on an
    event loop run it on the broker's fsync pool). ``StorageError`` names the file."""
    target = os.fspath(path)
    tmp = target + ".tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
        fsync_dir(os.path.dirname(target) or ".")
    except OSError as exc:
        raise StorageError(f"cannot write {target}: {exc}", errno=exc.errno) from exc


def write_checkpoint(path: str, value: int) -> None:
    replace_file(path, f"{_VERSION} {value}\n".encode("ascii"))


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
