"""Deletion in a disk log: nothing is fsynced where records are deleted; the next flush saves
the new log start offset (beside the shared conformance suite, which covers what is deleted)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from wharf.storage.checkpoint import read_checkpoint
from wharf.storage.loader import LOG_START_OFFSET_FILE
from wharf.storage.log import Log, LogConfig
from wharf.storage.record_batch import RecordInput

SMALL = LogConfig(segment_bytes=400, retention_ms=None)


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Names every fsync and fdatasync while the test runs."""
    calls: list[str] = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def fsync(fd: int) -> None:
        calls.append("fsync")
        real_fsync(fd)

    def fdatasync(fd: int) -> None:
        calls.append("fdatasync")
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    yield calls


def filled(path: Path, records: int = 30) -> Log:
    log = Log.open(path, SMALL)
    for i in range(records):
        log.append_records([RecordInput(None, b"%03d" % i * 20)])
    log.flush()
    return log


def test_deleting_records_syncs_nothing_until_the_next_flush(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    log = filled(tmp_path / "log")
    before = log.segment_base_offsets()
    fsyncs.clear()
    log.delete_records_before(20)
    assert fsyncs == []
    assert log.log_start_offset == 20
    assert log.segment_base_offsets()[0] > before[0]
    checkpoint = str(tmp_path / "log" / LOG_START_OFFSET_FILE)
    assert (read_checkpoint(checkpoint) or 0) < 20
    log.flush()
    assert read_checkpoint(checkpoint) == 20
    assert "fsync" in fsyncs
    log.close()


def test_a_crash_before_the_flush_shows_the_deleted_records_again(tmp_path: Path) -> None:
    log = filled(tmp_path / "log")
    log.delete_records_before(20)
    shutil.copytree(tmp_path / "log", tmp_path / "crashed")
    log.flush()
    shutil.copytree(tmp_path / "log", tmp_path / "flushed")
    log.close()
    crashed = Log.open(tmp_path / "crashed", SMALL)
    flushed = Log.open(tmp_path / "flushed", SMALL)
    try:
        # the segments went, but not the start offset: what is left from before 20 is visible
        assert crashed.log_start_offset == crashed.segment_base_offsets()[0] < 20
        assert flushed.log_start_offset == 20
        assert crashed.next_offset == flushed.next_offset == 30
    finally:
        crashed.close()
        flushed.close()


def test_retention_syncs_nothing_and_the_flush_saves_the_start(
    tmp_path: Path, fsyncs: list[str]
) -> None:
    log = Log.open(tmp_path / "log", LogConfig(segment_bytes=400, retention_bytes=800))
    for i in range(30):
        log.append_records([RecordInput(None, b"%03d" % i * 20)])
    log.flush()
    fsyncs.clear()
    assert log.enforce_retention(0) > 0
    assert fsyncs == []
    start = log.log_start_offset
    assert start > 0
    log.flush()
    assert read_checkpoint(str(tmp_path / "log" / LOG_START_OFFSET_FILE)) == start
    log.close()
