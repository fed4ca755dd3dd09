"""Recovery (LogLoader): torn tails, damaged indexes, checkpoints, refusal on trusted damage.

A crash is simulated by copying the directory of a log that is still open: the copy holds
exactly what a killed process leaves behind (data written but no clean close).
"""

from __future__ import annotations

import logging
import os
import shutil
import struct
from dataclasses import replace
from pathlib import Path

import crc32c
import pytest

from wharf.errors import CorruptBatchError, StorageError
from wharf.storage.checkpoint import read_checkpoint
from wharf.storage.log import Log, LogConfig
from wharf.storage.record_batch import RecordInput, build_batch
from wharf.testing.log_conformance import records_in

CONFIG = LogConfig(segment_bytes=1200, index_interval_bytes=200, retention_ms=None)


def value(i: int) -> bytes:
    return b"record-%04d-" % i + bytes([65 + i % 26]) * (i % 13)


def all_values(log: Log) -> list[bytes | None]:
    return [r.value for r in records_in(log.read(log.log_start_offset, 1 << 30))]


def crash_copy(log: Log, dest: Path) -> Path:
    shutil.copytree(log.path, dest)
    return dest


def segment_path(directory: Path, base: int) -> Path:
    return directory / f"{base:020d}.log"


@pytest.fixture
def crashed(tmp_path: Path) -> tuple[Path, int, int, int]:
    """A crashed log: 40 flushed records, then one more record (the victim) not flushed.

    Returns (snapshot dir, victim offset, victim position, victim size).
    """
    log = Log.open(tmp_path / "live", CONFIG)
    for i in range(40):
        log.append_records([RecordInput(b"k", value(i), (), 1000 + i)])
    log.flush()
    info = log.append_records([RecordInput(b"k", value(40), (("h", b"v"),), 1040)])
    assert len(log.segment_base_offsets()) > 2
    snap = crash_copy(log, tmp_path / "snapshot")
    log.close()
    return snap, info.base_offset, info.position, info.size


def reopen_variant(snapshot: Path, work: Path, base: int, mutate: object) -> Log:
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(snapshot, work)
    mutate(segment_path(work, base))  # type: ignore[operator]
    return Log.open(work, CONFIG)


def test_crash_copy_recovers_everything(crashed: tuple[Path, int, int, int]) -> None:
    snap, victim, _pos, _size = crashed
    log = Log.open(snap, CONFIG)
    assert log.next_offset == victim + 1
    assert log.recovery_truncated_bytes == 0
    assert all_values(log) == [value(i) for i in range(41)]
    log.close()


def test_truncating_the_last_batch_at_every_byte_keeps_exactly_the_prefix(
    crashed: tuple[Path, int, int, int], tmp_path: Path
) -> None:
    snap, victim, pos, size = crashed
    base = [int(p.name[:20]) for p in sorted(snap.glob("*.log"))][-1]
    expected = [value(i) for i in range(victim)]
    for cut in range(pos, pos + size):

        def truncate(path: Path, cut: int = cut) -> None:
            os.truncate(path, cut)

        log = reopen_variant(snap, tmp_path / "work", base, truncate)
        try:
            assert log.next_offset == victim, cut
            assert log.recovery_truncated_bytes == cut - pos, cut
            assert all_values(log) == expected, cut
            assert segment_path(Path(log.path), base).stat().st_size == pos, cut
            # the log takes appends again right where the valid prefix ends
            assert log.append_records([RecordInput(None, b"again")]).base_offset == victim
        finally:
            log.close()


def test_flipping_any_byte_of_the_last_batch_drops_exactly_that_batch(
    crashed: tuple[Path, int, int, int], tmp_path: Path
) -> None:
    snap, victim, pos, size = crashed
    base = [int(p.name[:20]) for p in sorted(snap.glob("*.log"))][-1]
    prefix = [value(i) for i in range(victim)]
    for at in range(pos, pos + size):

        def flip(path: Path, at: int = at) -> None:
            with open(path, "r+b") as f:
                f.seek(at)
                byte = f.read(1)
                f.seek(at)
                f.write(bytes([byte[0] ^ 0x10]))

        log = reopen_variant(snap, tmp_path / "work", base, flip)
        try:
            if 12 <= at - pos < 16:
                # the partition leader epoch is outside the CRC by design: still a valid batch
                assert log.next_offset == victim + 1, at
                assert all_values(log) == [*prefix, value(victim)], at
            else:
                assert log.next_offset == victim, at
                assert all_values(log) == prefix, at
                assert segment_path(Path(log.path), base).stat().st_size == pos, at
        finally:
            log.close()


def test_torn_tail_in_an_earlier_segment_removes_later_segments(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "live", CONFIG)
    for i in range(60):
        log.append_records([RecordInput(None, value(i))])
    bases = log.segment_base_offsets()
    assert len(bases) >= 4
    snap = crash_copy(log, tmp_path / "snap")  # nothing flushed: recovery point is 0
    log.close()
    damaged = segment_path(snap, bases[1])
    size = damaged.stat().st_size
    os.truncate(damaged, size - 5)
    log = Log.open(snap, CONFIG)
    try:
        assert log.segment_base_offsets() == bases[:2]
        assert log.next_offset == bases[2] - 1
        assert all_values(log) == [value(i) for i in range(bases[2] - 1)]
        assert not segment_path(snap, bases[2]).exists()
    finally:
        log.close()


def test_damage_below_the_recovery_point_refuses_to_open_and_truncates_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log = Log.open(tmp_path / "log", CONFIG)
    for i in range(60):
        log.append_records([RecordInput(None, value(i))])
    bases = log.segment_base_offsets()
    log.close()
    damaged = segment_path(tmp_path / "log", bases[1])
    size = damaged.stat().st_size
    os.truncate(damaged, size - 5)
    fds_before = len(os.listdir("/proc/self/fd"))
    with caplog.at_level(logging.ERROR), pytest.raises(StorageError, match="recovery point"):
        Log.open(tmp_path / "log", CONFIG)
    assert len(os.listdir("/proc/self/fd")) == fds_before, "a refused open leaked descriptors"
    assert any("refusing to open" in r.getMessage() for r in caplog.records)
    assert damaged.stat().st_size == size - 5
    assert segment_path(tmp_path / "log", bases[-1]).exists()


def test_clean_close_then_reopen_keeps_everything_and_positions(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "log", CONFIG)
    for i in range(50):
        log.append_records([RecordInput(None, value(i), (), 5000 + i)])
    log.delete_records_before(7)
    state = (log.segment_base_offsets(), log.next_offset, log.size_bytes, log.log_start_offset)
    log.close()
    log = Log.open(tmp_path / "log", CONFIG)
    try:
        got = (log.segment_base_offsets(), log.next_offset, log.size_bytes, log.log_start_offset)
        assert got == state
        assert log.durable_offset == 50
        assert [r.value for r in records_in(log.read(7, 1 << 20)) if r.offset >= 7] == [
            value(i) for i in range(7, 50)
        ]
        assert log.offset_for_timestamp(5030) == 30
        assert log.append_records([RecordInput(None, b"next")]).base_offset == 50
    finally:
        log.close()


def index_damage(kind: str, path: Path) -> None:
    if kind == "deleted":
        path.unlink()
    elif kind == "odd size":
        with open(path, "ab") as f:
            f.write(b"\x01\x02\x03")
    elif kind == "garbage":
        path.write_bytes(os.urandom(path.stat().st_size or 24))
    elif kind == "flipped position":
        data = bytearray(path.read_bytes())
        # the position field of the second entry (u32 at bytes 12..16 of .index) moves by 1
        data[15] ^= 0x01
        path.write_bytes(bytes(data))
    elif kind == "flipped offset":
        data = bytearray(path.read_bytes())
        data[11] ^= 0x01
        path.write_bytes(bytes(data))
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize(
    "kind", ["deleted", "odd size", "garbage", "flipped position", "flipped offset"]
)
@pytest.mark.parametrize("suffix", [".index", ".timeindex"])
def test_damaged_indexes_are_rebuilt(tmp_path: Path, kind: str, suffix: str) -> None:
    config = LogConfig(segment_bytes=6000, index_interval_bytes=100, retention_ms=None)
    log = Log.open(tmp_path / "log", config)
    for i in range(150):
        log.append_records([RecordInput(None, value(i), (), 10_000 + 10 * i)])
    bases = log.segment_base_offsets()
    assert len(bases) >= 3
    log.close()
    for base in bases:
        path = tmp_path / "log" / f"{base:020d}{suffix}"
        assert path.stat().st_size >= 24, "need several index entries"
        if kind.startswith("flipped") and suffix == ".timeindex":
            continue  # a flipped time-index entry is covered by the "garbage" case
        index_damage(kind, path)
    log = Log.open(tmp_path / "log", config)
    try:
        for offset in range(150):
            recs = records_in(log.read(offset, 1))
            assert recs[0].offset == offset and recs[0].value == value(offset)
        for offset in range(0, 150, 7):
            assert log.offset_for_timestamp(10_000 + 10 * offset) == offset
            assert log.offset_for_timestamp(10_000 + 10 * offset - 3) == offset
    finally:
        log.close()
    # the rebuilt indexes were written back and load cleanly next time
    for base in bases:
        assert (tmp_path / "log" / f"{base:020d}{suffix}").stat().st_size % (
            8 if suffix == ".index" else 12
        ) == 0


@pytest.mark.parametrize("content", [b"", b"garbage", b"0 -5\n", b"9 10\n", b"0 12 13\n"])
def test_unreadable_recovery_point_means_verify_everything(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    log = Log.open(tmp_path / "log", CONFIG)
    for i in range(40):
        log.append_records([RecordInput(None, value(i))])
    snap = crash_copy(log, tmp_path / "snap")
    log.close()
    (snap / "recovery-point").write_bytes(content)
    last = sorted(snap.glob("*.log"))[-1]
    os.truncate(last, last.stat().st_size - 1)
    log = Log.open(snap, CONFIG)
    try:
        assert log.next_offset == 39
        assert all_values(log) == [value(i) for i in range(39)]
    finally:
        log.close()


def test_log_start_offset_checkpoint_deletes_leftover_segments_on_open(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "log", CONFIG)
    for i in range(60):
        log.append_records([RecordInput(None, value(i))])
    bases = log.segment_base_offsets()
    log.close()
    # as if the process died after persisting the start offset but before deleting files
    (tmp_path / "log" / "log-start-offset").write_bytes(b"0 %d\n" % (bases[2] + 1))
    log = Log.open(tmp_path / "log", CONFIG)
    try:
        assert log.log_start_offset == bases[2] + 1
        assert log.segment_base_offsets() == bases[2:]
        assert not segment_path(tmp_path / "log", bases[0]).exists()
    finally:
        log.close()


def test_stray_files_are_cleaned_and_ignored(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "log", CONFIG)
    log.append_records([RecordInput(None, b"x")])
    log.close()
    (tmp_path / "log" / "recovery-point.tmp").write_bytes(b"half")
    (tmp_path / "log" / f"{999:020d}.index").write_bytes(b"\0" * 8)
    (tmp_path / "log" / "notes.txt").write_bytes(b"operator was here")
    log = Log.open(tmp_path / "log", CONFIG)
    try:
        assert log.next_offset == 1
        assert not (tmp_path / "log" / "recovery-point.tmp").exists()
        assert not (tmp_path / "log" / f"{999:020d}.index").exists()
        assert (tmp_path / "log" / "notes.txt").exists()
    finally:
        log.close()


def test_delete_removes_the_directory(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "log", CONFIG)
    log.append_records([RecordInput(None, b"x")])
    log.delete()
    assert not (tmp_path / "log").exists()
    assert log.closed


def test_index_files_hold_entries_that_name_batch_starts(tmp_path: Path) -> None:
    config = LogConfig(segment_bytes=50_000, index_interval_bytes=500, retention_ms=None)
    log = Log.open(tmp_path / "log", config)
    positions: dict[int, int] = {}
    for i in range(300):
        info = log.append_records([RecordInput(None, value(i), (), 7_000 + i)])
        positions[info.base_offset] = info.position
    bases = log.segment_base_offsets()
    log.close()
    for base in bases:
        index = (tmp_path / "log" / f"{base:020d}.index").read_bytes()
        entries = [struct.unpack_from(">II", index, i) for i in range(0, len(index), 8)]
        size = segment_path(tmp_path / "log", base).stat().st_size
        # one entry per index_interval_bytes (500) of batches of under 100 bytes
        assert size // 600 <= len(entries) <= size // 500, "index density"
        for rel, pos in entries:
            assert positions[base + rel] == pos
        times = (tmp_path / "log" / f"{base:020d}.timeindex").read_bytes()
        stamps = [struct.unpack_from(">qI", times, i) for i in range(0, len(times), 12)]
        assert [t for t, _ in stamps] == sorted({t for t, _ in stamps})
        for ts, rel in stamps:
            # the largest timestamp before the entry's offset (timestamps rise with offsets)
            assert ts == 7_000 + base + rel - 1


def test_flush_after_a_roll_moves_the_recovery_point(tmp_path: Path) -> None:
    # no throttled checkpoints inside a segment: only the roll moves it here
    config = replace(CONFIG, recovery_point_interval_bytes=None, recovery_point_interval_ms=None)
    log = Log.open(tmp_path / "log", config)
    for i in range(10):
        log.append_records([RecordInput(None, value(i))])
    log.flush()
    assert (read_checkpoint(str(tmp_path / "log" / "recovery-point")) or 0) == 0
    while len(log.segment_base_offsets()) < 3:
        log.append_records([RecordInput(None, value(log.next_offset))])
    end = log.next_offset
    log.flush()
    assert (tmp_path / "log" / "recovery-point").read_bytes() == b"0 %d\n" % end
    log.close()


def test_segment_age_after_reopen_counts_from_the_first_batch_timestamp(tmp_path: Path) -> None:
    now = [1_000_000]
    config = LogConfig(segment_ms=10_000, retention_ms=None)
    log = Log.open(tmp_path / "log", config, clock_ms=lambda: now[0])
    log.append_records([RecordInput(None, b"a")])  # timestamp = clock = 1_000_000
    log.close()
    now[0] += 9_999
    log = Log.open(tmp_path / "log", config, clock_ms=lambda: now[0])
    log.append_records([RecordInput(None, b"b")])
    assert log.segment_base_offsets() == [0]
    now[0] += 1
    log.append_records([RecordInput(None, b"c")])
    assert log.segment_base_offsets() == [0, 2]
    log.close()


def test_an_undecodable_batch_is_reported_without_blaming_the_index(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = LogConfig(index_interval_bytes=100, retention_ms=None)
    log = Log.open(tmp_path / "log", config)
    for i in range(30):
        log.append_records([RecordInput(None, value(i), (), 1000 + i)])
    # A producer's batch with a valid CRC whose gzip section is garbage: stored as is (the
    # append path does not decode), found out only when Wharf decodes it.
    bad = bytearray(build_batch([RecordInput(None, b"x" * 300, (), 5000)], compression=1))
    bad[70:80] = b"\xff" * 10
    struct.pack_into(">I", bad, 17, crc32c.crc32c(bytes(bad[21:])))
    info = log.append(bytes(bad))
    with caplog.at_level(logging.ERROR), pytest.raises(CorruptBatchError):
        log.offset_for_timestamp(4000)
    assert not any("points at no batch" in r.getMessage() for r in caplog.records)
    assert log.offset_for_timestamp(1010) == 10
    assert len(log.read(info.base_offset, 1)) == len(bad)
    log.close()


def test_start_offset_past_the_recovered_end_starts_empty_there(tmp_path: Path) -> None:
    config = LogConfig(retention_ms=None)
    log = Log.open(tmp_path / "live", config)
    for i in range(10):
        log.append_records([RecordInput(None, value(i))])
    log.flush()
    position = log.append_records([RecordInput(None, value(10))]).position
    for i in range(11, 20):
        log.append_records([RecordInput(None, value(i))])
    log.delete_records_before(15)
    assert log.segment_base_offsets() == [0]
    log.flush()  # saves the start offset 15
    snap = crash_copy(log, tmp_path / "snap")
    log.close()
    # as if the disk had lost the records 10..19 and kept the start offset 15 (a write cache
    # that acknowledged what it never wrote): the start offset is past the recovered end
    os.truncate(segment_path(snap, 0), position)
    log = Log.open(snap, config)
    try:
        assert (log.log_start_offset, log.next_offset, log.size_bytes) == (15, 15, 0)
        assert log.segment_base_offsets() == [15]
        assert log.read(15, 100) == b""
        assert log.append_records([RecordInput(None, b"x")]).base_offset == 15
    finally:
        log.close()
