"""flush() syncs every segment written since the last flush: the active one, one that rolled
in between, and after a failed flush everything that flush had taken on."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from wharf.errors import StorageError
from wharf.storage.log import Log, LogConfig
from wharf.storage.record_batch import RecordInput

_fdatasync = os.fdatasync


class SyncRecorder:
    """Stands in for ``os.fdatasync``: records the inode of every file synced, and fails the
    calls it is told to."""

    def __init__(self) -> None:
        self.synced: list[int] = []
        self.failures = 0

    def __call__(self, fd: int) -> None:
        if self.failures:
            self.failures -= 1
            raise OSError(errno.EIO, "injected I/O error")
        self.synced.append(os.fstat(fd).st_ino)
        _fdatasync(fd)


@pytest.fixture
def syncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[SyncRecorder]:
    recorder = SyncRecorder()
    monkeypatch.setattr(os, "fdatasync", recorder)
    yield recorder


def inode(path: Path) -> int:
    return path.stat().st_ino


def append(log: Log, n: int = 1) -> None:
    for _ in range(n):
        log.append_records([RecordInput(None, b"v" * 100)])


def test_flush_syncs_the_active_segment_once(tmp_path: Path, syncs: SyncRecorder) -> None:
    log = Log.open(tmp_path / "log", LogConfig(retention_ms=None))
    syncs.synced.clear()  # opening syncs what it created
    append(log, 3)
    assert log.flush() == 3
    [segment] = sorted((tmp_path / "log").glob("*.log"))
    assert syncs.synced == [inode(segment)]
    syncs.synced.clear()
    assert log.flush() == 3
    assert syncs.synced == [], "nothing written since: nothing to sync"
    log.close()


def test_flush_syncs_a_segment_that_rolled_since(tmp_path: Path, syncs: SyncRecorder) -> None:
    log = Log.open(tmp_path / "log", LogConfig(retention_ms=None, segment_bytes=1024))
    syncs.synced.clear()
    append(log, 20)  # several rolls
    assert log.flush() == 20
    segments = sorted((tmp_path / "log").glob("*.log"))
    assert len(segments) > 2
    assert sorted(syncs.synced) == sorted(inode(s) for s in segments)
    log.close()


def test_failed_flush_leaves_everything_to_the_next(tmp_path: Path, syncs: SyncRecorder) -> None:
    log = Log.open(tmp_path / "log", LogConfig(retention_ms=None, segment_bytes=1024))
    syncs.synced.clear()
    append(log, 12)  # a roll or two, then the active segment
    segments = sorted((tmp_path / "log").glob("*.log"))
    assert len(segments) > 1
    syncs.failures = 1
    with pytest.raises(StorageError, match="injected"):
        log.flush()
    assert log.durable_offset == 0
    assert log.flush() == 12
    assert sorted(syncs.synced) == sorted(inode(s) for s in segments)
    log.close()
