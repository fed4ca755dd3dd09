"""One broker per data directory, whether embedded or run by ``wharf serve``.

How it works: :meth:`Broker.open <wharf.core.broker.Broker.open>` takes an exclusive ``flock``
on ``<data-dir>/wharf.pid`` before it opens anything else and holds it until the broker is
closed; the file holds the owner's pid so that a second broker can say who is in the way.
``flock`` locks belong to the open file, so the kernel drops the lock when the process dies,
even by ``kill -9``: a pid left in the file by a dead process is never mistaken for a live
owner. Two brokers of one process on one directory are refused the same way.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from wharf.errors import ResourceLockedError

__all__ = ["PID_FILE_NAME", "DataDirInUseError", "DataDirLock"]

PID_FILE_NAME = "wharf.pid"


class DataDirInUseError(ResourceLockedError):
    """Another broker holds the data directory; ``pid`` is its process, when recorded."""

    def __init__(self, data_dir: Path, pid: int | None) -> None:
        who = f"pid {pid}" if pid is not None else "a process whose pid is not recorded yet"
        super().__init__(f"data directory {data_dir} is in use by another wharf broker ({who})")
        self.data_dir = data_dir
        self.pid = pid


class DataDirLock:
    """Exclusive lock on a data directory, held by a broker while open; also a context
    manager."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.path = data_dir / PID_FILE_NAME
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`DataDirInUseError` at once (never waits)."""
        if self._fd is not None:
            raise RuntimeError("lock already held")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise DataDirInUseError(self.data_dir, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Clear the pid and drop the lock; does nothing if not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
