"""The recovery point follows flushes inside the active segment, throttled, so a crash
re-verifies only what was appended since the last checkpoint.

A crash is simulated by copying the directory of a log that is still open (what a killed
process leaves behind); tests/storage/test_crash.py kills a real writer whose recovery point
moves this way.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from wharf.errors import CorruptBatchError, StorageError
from wharf.storage.log import Log, LogConfig
from wharf.storage.record_batch import RecordInput
from wharf.testing.clock import VirtualClock
from wharf.testing.log_conformance import records_in

# One big segment, so everything below happens inside the active segment.
CONFIG = LogConfig(
    segment_bytes=1 << 24,
    index_interval_bytes=256,
    retention_ms=None,
    recovery_point_interval_bytes=4096,
    recovery_point_interval_ms=None,
)


def value(i: int) -> bytes:
    return b"value-%05d-" % i + bytes([97 + i % 26]) * (i % 40)


def append(log: Log, start: int, count: int) -> None:
    for i in range(start, start + count):
        log.append_records([RecordInput(b"k", value(i), (), 1000 + i)])


def stored_values(log: Log) -> list[bytes | None]:
    return [r.value for r in records_in(log.read(log.log_start_offset, 1 << 30))]


def checkpoint(directory: Path) -> int:
    """The saved recovery point (a new log has none yet: the loader reads that as 0)."""
    if not (directory / "recovery-point").exists():
        return 0
    version, offset = (directory / "recovery-point").read_text().split()
    assert version == "0"
    return int(offset)


def crash_copy(log: Log, dest: Path) -> Path:
    shutil.copytree(log.path, dest)
    return dest


def segment(directory: Path) -> Path:
    (only,) = sorted(directory.glob("*.log"))
    return only


def test_flushes_move_the_recovery_point_and_reopen_verifies_only_the_tail(
    tmp_path: Path,
) -> None:
    log = Log.open(tmp_path / "live", CONFIG)
    append(log, 0, 300)
    flushed_end = log.next_offset
    flushed_size = log.size_bytes
    log.flush()
    assert log.recovery_point == flushed_end
    assert checkpoint(tmp_path / "live") == flushed_end
    append(log, 300, 20)  # written, never flushed
    tail_bytes = log.size_bytes - flushed_size
    snap = crash_copy(log, tmp_path / "snap")
    log.close()

    log = Log.open(snap, CONFIG)
    try:
        assert len(log.segment_base_offsets()) == 1
        assert log.recovery_truncated_bytes == 0
        assert log.recovery_verified_bytes == tail_bytes
        assert stored_values(log) == [value(i) for i in range(320)]
        assert log.append_records([RecordInput(None, b"next")]).base_offset == 320
    finally:
        log.close()


def test_walk_starts_at_the_index_entry_below_the_recovery_point(tmp_path: Path) -> None:
    # Break the length field of the first batch: a walk from the start of the segment would
    # refuse to open the log. Opening works, so the walk started from the index entry that
    # the flush wrote next to the checkpoint.
    log = Log.open(tmp_path / "live", CONFIG)
    append(log, 0, 300)
    log.flush()
    append(log, 300, 5)
    snap = crash_copy(log, tmp_path / "snap")
    log.close()
    with open(segment(snap), "r+b") as f:
        f.seek(8)
        f.write(b"\x7f\xff\xff\xff")
    log = Log.open(snap, CONFIG)
    try:
        assert log.next_offset == 305
        assert [r.value for r in records_in(log.read(300, 1 << 20))] == [
            value(i) for i in range(300, 305)
        ]
    finally:
        log.close()


def test_torn_tail_past_the_recovery_point_is_truncated(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "live", CONFIG)
    append(log, 0, 300)
    log.flush()
    flushed_size = log.size_bytes
    append(log, 300, 3)
    snap = crash_copy(log, tmp_path / "snap")
    log.close()
    os.truncate(segment(snap), segment(snap).stat().st_size - 3)
    log = Log.open(snap, CONFIG)
    try:
        assert log.next_offset == 302
        assert stored_values(log) == [value(i) for i in range(302)]
        assert log.recovery_truncated_bytes > 0
        assert flushed_size < segment(snap).stat().st_size
    finally:
        log.close()


def test_damage_below_a_recovery_point_inside_the_segment_refuses_to_open(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = Log.open(tmp_path / "live", CONFIG)
    append(log, 0, 300)
    log.flush()
    flushed_size = log.size_bytes
    snap = crash_copy(log, tmp_path / "snap")
    log.close()
    # cut into the last flushed batch: fsynced data lost underneath, not a torn tail
    os.truncate(segment(snap), flushed_size - 5)
    with caplog.at_level(logging.ERROR), pytest.raises(StorageError, match="recovery point"):
        Log.open(snap, CONFIG)
    assert any("refusing to open" in r.getMessage() for r in caplog.records)
    assert segment(snap).stat().st_size == flushed_size - 5


def test_the_byte_throttle_waits_for_enough_flushed_bytes(tmp_path: Path) -> None:
    config = replace(CONFIG, recovery_point_interval_bytes=64 * 1024)
    log = Log.open(tmp_path / "log", config)
    try:
        append(log, 0, 10)
        log.flush()
        assert log.recovery_point == 0
        assert checkpoint(tmp_path / "log") == 0
        while log.size_bytes < 64 * 1024:
            append(log, log.next_offset, 50)
        end = log.next_offset
        log.flush()
        assert log.recovery_point == end
        assert checkpoint(tmp_path / "log") == end
    finally:
        log.close()


def test_the_time_throttle_moves_the_recovery_point_once_the_interval_passed(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    config = replace(
        CONFIG, recovery_point_interval_bytes=None, recovery_point_interval_ms=1000
    )
    log = Log.open(tmp_path / "log", config, clock_ms=clock.now_ms)
    try:
        append(log, 0, 10)
        clock.advance(999)
        log.flush()
        assert checkpoint(tmp_path / "log") == 0
        clock.advance(1)
        log.flush()
        assert checkpoint(tmp_path / "log") == 10
        append(log, 10, 10)
        log.flush()  # the interval counts from the last checkpoint
        assert checkpoint(tmp_path / "log") == 10
        clock.step_wall_clock(-5000)  # a wall clock stepping back does not stall the checkpoint
        log.flush()
        assert checkpoint(tmp_path / "log") == 20
    finally:
        log.close()


def test_without_intervals_only_rolls_and_close_move_the_recovery_point(tmp_path: Path) -> None:
    config = replace(
        CONFIG, recovery_point_interval_bytes=None, recovery_point_interval_ms=None
    )
    log = Log.open(tmp_path / "log", config)
    append(log, 0, 300)
    log.flush()
    assert checkpoint(tmp_path / "log") == 0
    log.close()
    assert checkpoint(tmp_path / "log") == 300


def test_the_recovery_point_never_passes_what_a_flush_covered(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "log", CONFIG)
    try:
        append(log, 0, 300)
        log.flush()
        append(log, 300, 300)  # appended after the flush: beyond the checkpoint
        assert log.recovery_point == 300
        assert log.durable_offset == 300
        assert checkpoint(tmp_path / "log") == 300
    finally:
        log.close()


def test_interval_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="recovery_point_interval_bytes"):
        LogConfig(recovery_point_interval_bytes=0)
    with pytest.raises(ValueError, match="recovery_point_interval_ms"):
        LogConfig(recovery_point_interval_ms=-1)


def test_new_settings_apply_from_the_next_append(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "log", CONFIG)
    try:
        append(log, 0, 20)
        assert log.segment_base_offsets() == [0]
        log.config = replace(CONFIG, segment_bytes=200, max_batch_bytes=150)
        with pytest.raises(CorruptBatchError):  # larger than the new max_batch_bytes
            log.append_records([RecordInput(None, b"x" * 200)])
        append(log, 20, 1)  # the 200-byte segment limit rolls the active segment
        assert log.segment_base_offsets() == [0, 20]
    finally:
        log.close()


def test_reopening_a_cleanly_closed_log_writes_nothing(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "log", CONFIG)
    append(log, 0, 50)
    log.close()
    files = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (tmp_path / "log").iterdir()}
    log = Log.open(tmp_path / "log", CONFIG)
    try:
        assert {
            p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (tmp_path / "log").iterdir()
        } == files
        assert log.recovery_point == log.next_offset == 50
        assert stored_values(log) == [value(i) for i in range(50)]
        assert log.append_records([RecordInput(None, b"next")]).base_offset == 50
    finally:
        log.close()


def test_reopening_after_a_crash_still_moves_the_recovery_point(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "live", CONFIG)
    append(log, 0, 300)  # past the recovery point's byte interval
    log.flush()
    append(log, 300, 5)  # not flushed: past the recovery point
    snap = crash_copy(log, tmp_path / "snap")
    log.close()
    assert checkpoint(snap) == 300
    log = Log.open(snap, CONFIG)
    try:
        assert log.recovery_verified_bytes > 0
        assert checkpoint(snap) == log.recovery_point == 305
    finally:
        log.close()


def test_a_new_log_writes_no_checkpoint_until_it_has_data(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "live", CONFIG)
    assert [p.suffix for p in (tmp_path / "live").iterdir()] == [".log"]
    append(log, 0, 300)
    log.flush()  # durable, and past the byte interval: the recovery point moves
    snap = crash_copy(log, tmp_path / "snap")
    log.close()
    assert checkpoint(snap) == 300
    log = Log.open(snap, CONFIG)
    try:
        assert stored_values(log) == [value(i) for i in range(300)]
    finally:
        log.close()


def test_reopening_a_cleanly_closed_empty_log_rewrites_no_checkpoint(tmp_path: Path) -> None:
    Log.open(tmp_path / "log", CONFIG).close()
    log = Log.open(tmp_path / "log", CONFIG)
    log.close()
    files = {p.name: p.stat().st_ino for p in (tmp_path / "log").iterdir()}
    log = Log.open(tmp_path / "log", CONFIG)
    try:
        assert {p.name: p.stat().st_ino for p in (tmp_path / "log").iterdir()} == files
        assert log.append_records([RecordInput(None, b"first")]).base_offset == 0
    finally:
        log.close()


def test_closing_a_log_left_as_found_writes_nothing_and_syncs_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A crash restart opens every log with a directory and closes those beyond the open limit
    # again at once: a log it read but did not change needs no write or fsync to close.
    log = Log.open(tmp_path / "log", CONFIG)
    append(log, 0, 50)
    log.close()
    files = {p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (tmp_path / "log").iterdir()}
    synced: list[int] = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    monkeypatch.setattr(os, "fdatasync", lambda fd: (synced.append(fd), real_fdatasync(fd))[1])
    log = Log.open(tmp_path / "log", CONFIG)
    assert stored_values(log) == [value(i) for i in range(50)]  # read, not changed
    log.close()
    assert synced == []
    assert {
        p.name: (p.stat().st_ino, p.stat().st_mtime_ns) for p in (tmp_path / "log").iterdir()
    } == files


def test_closing_a_log_changed_after_it_was_found_clean_saves_the_change(
    tmp_path: Path,
) -> None:
    log = Log.open(tmp_path / "log", CONFIG)
    append(log, 0, 50)
    log.close()
    for change in ("append", "delete", "roll"):
        config = replace(CONFIG, segment_bytes=200) if change == "roll" else CONFIG
        log = Log.open(tmp_path / "log", config)
        segments = log.segment_base_offsets()
        if change == "delete":
            log.delete_records_before(log.log_start_offset + 1)
        else:
            append(log, log.next_offset, 3)
        assert (log.segment_base_offsets() != segments) == (change == "roll")
        start, end = log.log_start_offset, log.next_offset
        log.close()
        assert checkpoint(tmp_path / "log") == end
        crashed = crash_copy(log, tmp_path / f"after-{change}")  # as a kill -9 would leave it
        reopened = Log.open(crashed, config)
        try:
            assert reopened.recovery_verified_bytes == 0  # the close made it all durable
            assert (reopened.log_start_offset, reopened.next_offset) == (start, end)
        finally:
            reopened.close()
