"""flush() syncs every segment written since the last flush, the active one and any that
rolled in between; after a failed fsync the log is fenced until it is opened again."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from wharf.errors import StorageError
from wharf.storage.checkpoint import read_checkpoint
from wharf.storage.loader import RECOVERY_POINT_FILE
from wharf.storage.log import Log, LogConfig
from wharf.storage.record_batch import RecordInput
from wharf.testing.log_conformance import records_in

_fdatasync = os.fdatasync
_pwrite = os.pwrite


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


def test_failed_fsync_fences_the_log_until_it_is_reopened(
    tmp_path: Path, syncs: SyncRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = Log.open(tmp_path / "log", LogConfig(retention_ms=None, segment_bytes=1024))
    append(log, 12)  # a roll or two, then the active segment
    segments = sorted((tmp_path / "log").glob("*.log"))
    assert len(segments) > 1
    syncs.failures = 1
    with pytest.raises(StorageError, match="fsync failed") as failed:
        log.flush()
    assert failed.value.errno == errno.EIO
    assert log.fenced and log.durable_offset == 0
    # The kernel may have dropped what it could not write: a later fsync proves nothing.
    with pytest.raises(StorageError, match="fsync failed"):
        log.flush()
    assert log.durable_offset == 0
    with pytest.raises(StorageError, match="no more appends"):
        append(log)
    assert log.next_offset == 12
    assert len(records_in(log.read(0, 1 << 20))) > 0  # reads go on
    log.close()
    assert read_checkpoint(str(tmp_path / "log" / RECOVERY_POINT_FILE)) in (None, 0)

    # Opening it again verifies everything past the recovery point, writes it again (so that
    # the fsync after covers pages the kernel may have marked clean) and fsyncs it.
    rewritten: list[tuple[int, int, int]] = []

    def recording_pwrite(fd: int, data: bytes | memoryview, position: int) -> int:
        written = _pwrite(fd, data, position)
        rewritten.append((os.fstat(fd).st_ino, position, written))
        return written

    monkeypatch.setattr(os, "pwrite", recording_pwrite)
    syncs.synced.clear()
    reopened = Log.open(tmp_path / "log")
    monkeypatch.setattr(os, "pwrite", _pwrite)
    try:
        assert reopened.next_offset == 12
        assert not reopened.fenced
        for segment in segments:
            ranges = sorted((pos, n) for ino, pos, n in rewritten if ino == inode(segment))
            covered = 0
            for pos, n in ranges:
                assert pos == covered, f"{segment.name}: gap before {pos}"
                covered += n
            assert covered == segment.stat().st_size, f"{segment.name} not written again"
            assert inode(segment) in syncs.synced
        append(reopened)
        assert reopened.flush() == 13
    finally:
        reopened.close()


def test_a_clean_close_leaves_nothing_to_write_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = Log.open(tmp_path / "log", LogConfig(retention_ms=None))
    append(log, 50)
    log.close()
    rewritten: list[int] = []

    def recording_pwrite(fd: int, data: bytes | memoryview, position: int) -> int:
        rewritten.append(position)
        return _pwrite(fd, data, position)

    monkeypatch.setattr(os, "pwrite", recording_pwrite)
    Log.open(tmp_path / "log").close()
    assert rewritten == []
