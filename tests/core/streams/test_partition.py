import asyncio
import json
import shutil
from pathlib import Path

import pytest

from wharf.core.config import FsyncPolicy, TopicDefaults
from wharf.core.streams import producer_state
from wharf.core.streams.partition import Partition, wait_for_any
from wharf.core.streams.topic_config import TopicConfig
from wharf.errors import BatchTooLargeError, CorruptBatchError, OffsetOutOfRangeError
from wharf.storage.record_batch import RecordInput, build_batch, decode_records


def open_partition(
    path: Path,
    policy: FsyncPolicy = FsyncPolicy.ALWAYS,
    **overrides: str,
) -> Partition:
    config = TopicConfig.resolve(TopicDefaults(), overrides)
    partition = Partition("t", 0, path / "t-0", config, fsync=policy, fsync_interval_ms=20)
    partition.start()
    return partition


def batch(*values: bytes, ts: int | None = None) -> bytes:
    return build_batch([RecordInput(None, v, (), ts) for v in values])


async def test_append_then_read_back(tmp_path: Path) -> None:
    p = open_partition(tmp_path)
    first = await p.append(batch(b"a", b"b"))
    second = await p.append(batch(b"c"))
    assert (first.base_offset, first.last_offset, second.base_offset) == (0, 1, 2)
    assert p.high_watermark == p.log_end_offset == 3
    assert [r.value for r in decode_records(p.read(2, 1000))] == [b"c"]
    assert [r.value for r in p.read_records(1, 10)] == [b"b", b"c"]
    assert p.read(3, 1000) == b""
    assert (p.messages_in, p.batches_in) == (3, 2)
    assert p.bytes_in == len(batch(b"a", b"b")) + len(batch(b"c"))
    with pytest.raises(OffsetOutOfRangeError):
        p.read(4, 1000)
    await p.close()


async def test_concurrent_appends_are_group_committed_before_ack(tmp_path: Path) -> None:
    p = open_partition(tmp_path)
    results = await asyncio.gather(*(p.append(batch(b"%d" % i)) for i in range(64)))
    assert sorted(r.base_offset for r in results) == list(range(64))
    # every acknowledged append is durable, and fsyncs were shared
    assert p.committer.durable_offset == 64
    assert p.committer.fsyncs < 64
    await p.close()
    reopened = open_partition(tmp_path)
    assert reopened.log_end_offset == 64
    await reopened.close()


async def test_high_watermark_waits_for_fsync_under_always(tmp_path: Path) -> None:
    p = open_partition(tmp_path)
    result = await p.append(batch(b"x"), acks=0)  # not waiting for the fsync
    assert result.base_offset == 0
    assert p.log_end_offset == 1
    assert await p.wait_for_data(0, 10)  # becomes visible once the background fsync is done
    assert p.committer.durable_offset == 1
    await p.close()


async def test_high_watermark_is_log_end_without_fsync_wait(tmp_path: Path) -> None:
    p = open_partition(tmp_path, FsyncPolicy.INTERVAL)
    await p.append(batch(b"x"))
    assert p.high_watermark == 1
    assert [r.value for r in p.read_records(0, 5)] == [b"x"]
    await p.close()


async def test_long_poll_wakes_on_append_and_times_out_otherwise(tmp_path: Path) -> None:
    p = open_partition(tmp_path)
    q = Partition(
        "t", 1, tmp_path / "t-1", p.config, fsync=FsyncPolicy.ALWAYS, fsync_interval_ms=20
    )
    waiter = asyncio.create_task(p.wait_for_data(0, 30))
    both = asyncio.create_task(wait_for_any([(p, 1), (q, 0)], 30))
    await asyncio.sleep(0.02)
    assert not waiter.done() and not both.done()
    await p.append(batch(b"hello"))
    assert await asyncio.wait_for(waiter, 10) is True
    assert not both.done()  # p's watermark is 1, it waits for more than offset 1
    await q.append(batch(b"other"))
    assert await asyncio.wait_for(both, 10) is True
    assert await p.wait_for_data(1, 0.05) is False
    await p.close()
    await q.close()


async def test_batches_above_max_message_bytes_are_refused(tmp_path: Path) -> None:
    p = open_partition(tmp_path, **{"max.message.bytes": "200"})
    with pytest.raises(BatchTooLargeError, match="exceeds the limit of 200 bytes"):
        await p.append(batch(b"x" * 300))
    with pytest.raises(CorruptBatchError):
        await p.append(batch(b"ok")[:-1])
    assert p.log_end_offset == 0
    await p.append(batch(b"small"))
    assert p.log_end_offset == 1
    await p.close()


async def test_list_offsets_by_timestamp(tmp_path: Path) -> None:
    p = open_partition(tmp_path)
    await p.append(batch(b"a", ts=1000))
    await p.append(batch(b"b", ts=2000))
    await p.append(batch(b"c", ts=3000))
    assert p.list_offset(-2) == (0, -1)
    assert p.list_offset(-1) == (3, -1)
    assert p.list_offset(1500) == (1, 2000)
    assert p.list_offset(3000) == (2, 3000)
    assert p.list_offset(3001) == (-1, -1)
    await p.append(batch(b"d", b"late", b"e", ts=500))
    assert p.list_offset(-3) == (2, 3000)
    mixed = [RecordInput(None, b"x", (), 100), RecordInput(None, b"y", (), 9000)]
    await p.append(build_batch(mixed))
    assert p.list_offset(-3) == (7, 9000)
    await p.close()


async def test_max_timestamp_across_segments_within_the_visible_range(tmp_path: Path) -> None:
    p = open_partition(tmp_path, **{"segment.bytes": "300"})  # a few batches per segment
    stamps = [5, 40, 7, 40, 12, 3, 60, 9, 60, 2, 8, 1, 30, 4]
    for i, ts in enumerate(stamps):
        await p.append(batch(b"%02d" % i, ts=ts))
    assert len(p.log.segment_base_offsets()) > 3

    def expected(start: int, end: int) -> tuple[int, int]:
        top = max(stamps[start:end])
        return stamps.index(top, start, end), top

    assert p.list_offset(-3) == expected(0, len(stamps)) == (6, 60)  # the first of two
    p.delete_records_before(7)  # the log start falls inside a segment
    assert p.list_offset(-3) == expected(7, len(stamps)) == (8, 60)
    p.delete_records_before(9)
    assert p.list_offset(-3) == expected(9, len(stamps)) == (12, 30)
    await p.close()


async def test_delete_records_before_moves_log_start(tmp_path: Path) -> None:
    p = open_partition(tmp_path)
    for i in range(5):
        await p.append(batch(b"%d" % i))
    assert p.delete_records_before(3) == 3
    with pytest.raises(OffsetOutOfRangeError):
        p.read(1, 100)
    assert [r.value for r in p.read_records(3, 10)] == [b"3", b"4"]
    with pytest.raises(OffsetOutOfRangeError):
        p.delete_records_before(9)
    assert p.delete_records_before(-1) == 5
    await p.close()
    reopened = open_partition(tmp_path)
    assert reopened.log_start_offset == 5
    await reopened.close()


async def test_retention_drops_old_segments(tmp_path: Path) -> None:
    p = open_partition(tmp_path, **{"retention.ms": "60000", "segment.bytes": "200"})
    for i in range(6):
        await p.append(batch(b"v" * 100, ts=1_000 + i))
    await p.append(batch(b"new", ts=10_000_000))
    deleted = p.enforce_retention(10_000_000)
    assert deleted >= 5
    assert p.log_start_offset == 6
    assert [r.value for r in p.read_records(p.log_start_offset, 10)] == [b"new"]
    await p.close()


async def test_compact_policy_keeps_data_beyond_retention(tmp_path: Path) -> None:
    p = open_partition(
        tmp_path, **{"retention.ms": "1", "segment.bytes": "200", "cleanup.policy": "compact"}
    )
    for i in range(4):
        await p.append(batch(b"v" * 100, ts=1_000 + i))
    assert p.enforce_retention(10_000_000) == 0
    assert p.log_start_offset == 0
    await p.close()


async def test_unbounded_wait_ends_on_data_or_close(tmp_path: Path) -> None:
    p = open_partition(tmp_path)
    for_data = asyncio.create_task(p.wait_for_data(0))
    await asyncio.sleep(0.02)
    assert not for_data.done()
    await p.append(batch(b"x"))
    assert await asyncio.wait_for(for_data, 10) is True
    for_close = asyncio.create_task(p.wait_for_data(5))
    await asyncio.sleep(0.02)
    assert not for_close.done()
    await p.close()
    assert await asyncio.wait_for(for_close, 10) is True


async def test_idempotent_state_outlives_a_crash_long_after_the_producer_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without a snapshot only this many offsets of the tail are replayed (100,000 for real).
    monkeypatch.setattr(producer_state, "REBUILD_TAIL_OFFSETS", 50)
    p = open_partition(tmp_path, **{"segment.bytes": "2000"})
    once = build_batch([RecordInput(None, b"once")], producer_id=7, producer_epoch=0,
                       base_sequence=0)
    first = await p.append(once)
    for i in range(120):  # other records, far past the tail window, over several segments
        await p.append(batch(b"%03d" % i + b"x" * 60))
    assert len(p.log.segment_base_offsets()) > 3
    crashed = tmp_path / "crashed" / "t-0"
    shutil.copytree(p.path, crashed)  # what a crash now leaves: no snapshot from a clean close
    await p.close()

    config = TopicConfig.resolve(TopicDefaults(), {"segment.bytes": "2000"})
    reopened = Partition("t", 0, crashed, config, fsync=FsyncPolicy.ALWAYS, fsync_interval_ms=20)
    reopened.start()
    try:
        retry = await reopened.append(once)  # the producer retries, not knowing it got through
        assert retry.duplicate and retry.base_offset == first.base_offset
        assert reopened.log_end_offset == 121
    finally:
        await reopened.close()


async def test_the_roll_the_log_reports_saves_the_producer_state_before_it(
    tmp_path: Path,
) -> None:
    p = open_partition(tmp_path, **{"segment.bytes": "400"})
    snapshot = p.path / "producer-state.json"
    for seq in range(8):
        await p.append(build_batch([RecordInput(None, b"v" * 80)], producer_id=7,
                                   producer_epoch=0, base_sequence=seq))
        bases = p.log.segment_base_offsets()
        if len(bases) > 1:
            break
    assert len(bases) == 2 and snapshot.exists()
    saved = json.loads(snapshot.read_text())
    # the state as of the new segment's first offset: every batch before it, not the one in it
    assert saved["end_offset"] == bases[1]
    assert saved["producers"] == [[7, 0, [[s, s, s, s] for s in range(bases[1])]]]
    await p.close()
