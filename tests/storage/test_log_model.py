"""The disk log and the memory log, driven by the same random operations, agree byte for byte."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wharf.errors import OffsetOutOfRangeError
from wharf.storage.log import Log, LogConfig
from wharf.storage.memory_log import MemoryLog
from wharf.storage.record_batch import RecordInput, build_batch, iter_batches
from wharf.testing.clock import VirtualClock

CONFIG = LogConfig(
    segment_bytes=700, segment_ms=5_000, index_interval_bytes=150, retention_ms=20_000,
    retention_bytes=3_000,
)
KINDS = ["append", "append", "append", "read", "read", "retention", "delete", "tick", "reopen",
         "timestamps"]


@pytest.mark.slow
@settings(max_examples=60, deadline=None)
@given(data=st.data(), steps=st.integers(1, 40))
def test_disk_and_memory_logs_agree(data: st.DataObject, steps: int) -> None:
    tmp = Path(tempfile.mkdtemp())
    clock = VirtualClock(start_ms=100_000)
    disk = Log.open(tmp / "log", CONFIG, clock_ms=clock.now_ms)
    mem = MemoryLog(CONFIG, clock_ms=clock.now_ms)
    try:
        n = 0
        for _ in range(steps):
            kind = data.draw(st.sampled_from(KINDS))
            if kind == "append":
                batches = b""
                for _b in range(data.draw(st.integers(1, 3))):
                    n += 1
                    size = data.draw(st.integers(0, 200))
                    batches += build_batch(
                        [RecordInput(b"%d" % n, bytes([n % 256]) * size, (), clock.now_ms() + i)
                         for i in range(data.draw(st.integers(1, 4)))]
                    )
                assert disk.append(batches) == mem.append(batches)
            elif kind == "read":
                offset = data.draw(st.integers(mem.log_start_offset, mem.next_offset))
                max_bytes = data.draw(st.integers(1, 2_000))
                sizes = [h.size for _p, h in iter_batches(mem.read(offset, 1 << 30))]
                if sizes and data.draw(st.booleans()):
                    # exactly the size of the first k batches, or one byte either side
                    k = data.draw(st.integers(1, len(sizes)))
                    max_bytes = sum(sizes[:k]) + data.draw(st.sampled_from([-1, 0, 1]))
                max_offset = data.draw(st.none() | st.integers(0, mem.next_offset + 2))
                got = disk.read(offset, max_bytes, max_offset=max_offset)
                assert got == mem.read(offset, max_bytes, max_offset=max_offset)
            elif kind == "retention":
                now = clock.now_ms()
                assert disk.enforce_retention(now) == mem.enforce_retention(now)
            elif kind == "delete":
                target = data.draw(st.integers(0, mem.next_offset))
                disk.delete_records_before(target)
                mem.delete_records_before(target)
            elif kind == "tick":
                clock.advance(data.draw(st.sampled_from([1_000, 3_000, 25_000])))
            elif kind == "reopen":
                disk.close()
                disk = Log.open(tmp / "log", CONFIG, clock_ms=clock.now_ms)
            else:
                for ts in (0, clock.now_ms() - 4_000, clock.now_ms(), clock.now_ms() + 10**9):
                    assert disk.offset_for_timestamp(ts) == mem.offset_for_timestamp(ts)
            assert (disk.log_start_offset, disk.next_offset, disk.size_bytes) == (
                mem.log_start_offset, mem.next_offset, mem.size_bytes
            ), kind
            assert disk.segment_base_offsets() == mem.segment_base_offsets(), kind
        for log in (disk, mem):
            try:
                log.read(mem.next_offset + 1, 10)
            except OffsetOutOfRangeError:
                pass
            else:
                raise AssertionError("read past the end did not raise")
    finally:
        disk.close()
        shutil.rmtree(tmp, ignore_errors=True)


def test_a_reopened_log_rolls_by_age_as_the_live_one_does(tmp_path: Path) -> None:
    # Found by the test above: the live log counted a segment's age from the wall clock of its
    # first append, a reopened one from its first batch's timestamp, so they rolled apart.
    clock = VirtualClock(start_ms=100_000)
    disk = Log.open(tmp_path / "log", CONFIG, clock_ms=clock.now_ms)
    mem = MemoryLog(CONFIG, clock_ms=clock.now_ms)

    def append(ts: list[int]) -> None:
        batch = build_batch([RecordInput(None, b"v", (), t) for t in ts])
        assert disk.append(batch) == mem.append(batch)

    try:
        append([clock.now_ms(), clock.now_ms() + 1])
        clock.advance(CONFIG.segment_ms)
        disk.close()
        disk = Log.open(tmp_path / "log", CONFIG, clock_ms=clock.now_ms)
        append([clock.now_ms() - 1, clock.now_ms()])  # 4,999 ms after the first batch: no roll yet
        assert disk.segment_base_offsets() == mem.segment_base_offsets() == [0]
        append([clock.now_ms() + 1])  # 5,000 ms
        assert disk.segment_base_offsets() == mem.segment_base_offsets() == [0, 4]
    finally:
        disk.close()
