"""Blocks reserved ahead of appends: the file's size never changes, the space is given back."""

from __future__ import annotations

import os
from pathlib import Path

from wharf.storage import preallocate
from wharf.storage.log import Log, LogConfig
from wharf.storage.record_batch import RecordInput, build_batch
from wharf.storage.segment import RESERVE_FROM, RESERVE_MAX
from wharf.testing.log_conformance import records_in

MIB = 1 << 20


def allocated(path: Path | str) -> int:
    return os.stat(path).st_blocks * 512


def segment_files(log: Log) -> list[Path]:
    return sorted(Path(log.path).glob("*.log"))


def test_reserve_allocates_past_the_end_without_changing_the_size(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 4096)
    fd = os.open(path, os.O_RDWR)
    try:
        assert preallocate.reserve(fd, 4096, 8 * MIB)
        assert os.fstat(fd).st_size == 4096
        assert allocated(path) >= 8 * MIB
        preallocate.release(fd, 4096)
        assert os.fstat(fd).st_size == 4096
        assert allocated(path) < MIB
    finally:
        os.close(fd)
    assert path.read_bytes() == b"x" * 4096


def test_reserve_reports_failure_instead_of_raising(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "f", os.O_RDONLY | os.O_CREAT)
    try:
        assert not preallocate.reserve(fd, 0, MIB)  # EBADF: not open for writing
        assert not preallocate.reserve(fd, 0, 0)
    finally:
        os.close(fd)


def batch_of(size: int) -> bytes:
    return build_batch([RecordInput(None, b"r" * size)])


def test_log_reserves_ahead_once_a_segment_holds_a_mebibyte(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "log", LogConfig(retention_ms=None))
    batch = batch_of(64 * 1024)
    while log.size_bytes + len(batch) < RESERVE_FROM:
        log.append(batch)
    [segment] = segment_files(log)
    assert allocated(segment) < RESERVE_FROM + 64 * 1024, "nothing reserved below a mebibyte"
    log.append(batch)
    log.append(batch)
    size = log.size_bytes
    assert segment.stat().st_size == size, "the file's size is the data's"
    # Reserved when the first append passed a mebibyte: as much again as the segment held.
    assert allocated(segment) >= size + RESERVE_FROM - 2 * len(batch)
    log.close()
    assert segment.stat().st_size == size
    assert allocated(segment) < size + 64 * 1024, "close gives the reservation back"


def test_reservation_stays_within_its_cap(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "log", LogConfig(retention_ms=None))
    batch = batch_of(512 * 1024)
    for _ in range(24):  # 12 MiB
        log.append(batch)
    [segment] = segment_files(log)
    assert allocated(segment) <= log.size_bytes + RESERVE_MAX + len(batch)
    log.close()


def test_roll_gives_back_the_old_segments_reservation(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "log", LogConfig(retention_ms=None, segment_bytes=3 * MIB))
    batch = batch_of(256 * 1024)
    while len(segment_files(log)) < 2:
        log.append(batch)
    old, active = segment_files(log)
    assert allocated(old) < old.stat().st_size + 64 * 1024
    log.close()


def test_reopening_gives_back_space_reserved_before_a_crash(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "log", LogConfig(retention_ms=None))
    values = [b"%04d" % i * 64 for i in range(300)]
    for value in values:
        log.append(build_batch([RecordInput(None, value)]))
    log.close()
    [segment] = segment_files(log)
    size = segment.stat().st_size
    # What a crash after a reservation leaves: blocks past the end nobody gives back.
    fd = os.open(segment, os.O_RDWR)
    try:
        assert preallocate.reserve(fd, size, 16 * MIB)
    finally:
        os.close(fd)
    assert allocated(segment) >= 16 * MIB
    reopened = Log.open(tmp_path / "log")
    try:
        assert allocated(segment) < size + 64 * 1024
        assert reopened.next_offset == len(values)
        assert [r.value for r in records_in(reopened.read(0, 1 << 30))] == values
        assert reopened.recovery_truncated_bytes == 0
    finally:
        reopened.close()
