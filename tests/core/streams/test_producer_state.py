from pathlib import Path

import pytest

from wharf.core.config import FsyncPolicy, TopicDefaults
from wharf.core.streams.errors import ErrorCode, ProducerStateError
from wharf.core.streams.partition import Partition
from wharf.core.streams.producer_state import ProducerIdAllocator
from wharf.core.streams.topic_config import TopicConfig
from wharf.storage.record_batch import RecordInput, build_batch

MAX_SEQ = 2**31 - 1


def open_partition(path: Path) -> Partition:
    config = TopicConfig.resolve(TopicDefaults(), {})
    p = Partition("t", 0, path / "t-0", config, fsync=FsyncPolicy.ALWAYS, fsync_interval_ms=50)
    p.start()
    return p


def pbatch(pid: int, epoch: int, seq: int, count: int = 1) -> bytes:
    records = [RecordInput(None, b"v%d" % i) for i in range(count)]
    return build_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=seq)


async def test_retried_batch_returns_original_offset_without_writing(tmp_path: Path) -> None:
    p = open_partition(tmp_path)
    await p.append(pbatch(-1, -1, -1))  # a non-idempotent record first
    first = await p.append(pbatch(7, 0, 0, count=3))
    second = await p.append(pbatch(7, 0, 3, count=2))
    assert (first.base_offset, second.base_offset) == (1, 4)
    retry = await p.append(pbatch(7, 0, 0, count=3))
    assert (retry.base_offset, retry.last_offset, retry.duplicate) == (1, 3, True)
    assert p.log_end_offset == 6
    assert p.messages_in == 6
    await p.close()


async def test_sequence_gap_and_fenced_epoch_are_refused(tmp_path: Path) -> None:
    p = open_partition(tmp_path)
    await p.append(pbatch(3, 1, 0, count=2))
    with pytest.raises(ProducerStateError) as gap:
        await p.append(pbatch(3, 1, 5))
    assert gap.value.code is ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    with pytest.raises(ProducerStateError) as fenced:
        await p.append(pbatch(3, 0, 2))
    assert fenced.value.code is ErrorCode.INVALID_PRODUCER_EPOCH
    with pytest.raises(ProducerStateError) as bad_bump:
        await p.append(pbatch(3, 2, 4))
    assert bad_bump.value.code is ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert p.log_end_offset == 2
    bumped = await p.append(pbatch(3, 2, 0))
    assert bumped.base_offset == 2
    with pytest.raises(ProducerStateError) as old:
        await p.append(pbatch(3, 1, 2))
    assert old.value.code is ErrorCode.INVALID_PRODUCER_EPOCH
    await p.close()


async def test_only_the_last_five_batches_are_recognised_as_retries(tmp_path: Path) -> None:
    p = open_partition(tmp_path)
    for seq in range(7):
        await p.append(pbatch(9, 0, seq))
    assert (await p.append(pbatch(9, 0, 2))).duplicate
    with pytest.raises(ProducerStateError) as too_old:
        await p.append(pbatch(9, 0, 1))
    assert too_old.value.code is ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    await p.close()


async def test_sequence_wraps_after_max(tmp_path: Path) -> None:
    p = open_partition(tmp_path)
    await p.append(pbatch(4, 0, MAX_SEQ - 1, count=2))
    wrapped = await p.append(pbatch(4, 0, 0))
    assert wrapped.base_offset == 2 and not wrapped.duplicate
    await p.close()


async def test_unknown_producer_may_start_anywhere(tmp_path: Path) -> None:
    p = open_partition(tmp_path)
    assert (await p.append(pbatch(11, 5, 42))).base_offset == 0
    assert (await p.append(pbatch(11, 5, 43))).base_offset == 1
    await p.close()


async def test_state_is_rebuilt_from_the_log_after_restart(tmp_path: Path) -> None:
    p = open_partition(tmp_path)
    await p.append(pbatch(5, 0, 0, count=2))
    await p.append(pbatch(5, 0, 2))
    await p.close()
    p = open_partition(tmp_path)
    retry = await p.append(pbatch(5, 0, 2))
    assert retry.duplicate and retry.base_offset == 2
    with pytest.raises(ProducerStateError) as gap:
        await p.append(pbatch(5, 0, 9))
    assert gap.value.code is ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    assert (await p.append(pbatch(5, 0, 3))).base_offset == 3
    await p.close()


async def test_several_batches_in_one_append_must_follow_each_other(tmp_path: Path) -> None:
    p = open_partition(tmp_path)
    ok = await p.append(pbatch(6, 0, 0) + pbatch(6, 0, 1, count=2))
    assert (ok.base_offset, ok.last_offset) == (0, 2)
    with pytest.raises(ProducerStateError) as gap:
        await p.append(pbatch(6, 0, 3) + pbatch(6, 0, 7))
    assert gap.value.code is ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    with pytest.raises(ProducerStateError) as dup:
        await p.append(pbatch(6, 0, 1, count=2) + pbatch(6, 0, 3))
    assert dup.value.code is ErrorCode.DUPLICATE_SEQUENCE_NUMBER
    assert p.log_end_offset == 3
    await p.close()


async def test_producer_ids_are_unique_across_restarts(tmp_path: Path) -> None:
    first = ProducerIdAllocator(tmp_path)
    ids = [await first.allocate() for _ in range(5)]
    second = ProducerIdAllocator(tmp_path)
    more = [await second.allocate() for _ in range(1500)]
    third = ProducerIdAllocator(tmp_path)
    last = await third.allocate()
    assert ids == [0, 1, 2, 3, 4]
    assert len(set(ids + more + [last])) == len(ids) + len(more) + 1
    assert min(more) > max(ids) and last > max(more)


async def test_clean_close_snapshot_is_used_and_extended_by_later_batches(tmp_path: Path) -> None:
    p = open_partition(tmp_path)
    await p.append(pbatch(5, 0, 0, count=2))
    await p.close()
    snapshot = tmp_path / "t-0" / "producer-state.json"
    assert snapshot.exists()
    # the snapshot is what the next open reads: a producer known only from it is enforced
    text = snapshot.read_text()
    snapshot.write_text(text.replace('"producers":[', '"producers":[[77,3,[[0,9,0,0]]],'))
    p = open_partition(tmp_path)
    with pytest.raises(ProducerStateError) as fenced:
        await p.append(pbatch(77, 2, 10))
    assert fenced.value.code is ErrorCode.INVALID_PRODUCER_EPOCH
    await p.close()
    # a second life ends in a crash (no close): its batch is only in the log, after the snapshot
    p = open_partition(tmp_path)
    await p.append(pbatch(5, 0, 2))
    await p.committer.close()
    p.log.close()
    p = open_partition(tmp_path)
    assert (await p.append(pbatch(5, 0, 0, count=2))).duplicate
    assert (await p.append(pbatch(5, 0, 2))).duplicate
    assert (await p.append(pbatch(5, 0, 3))).base_offset == 3
    await p.close()


async def test_snapshot_beyond_the_log_end_is_ignored(tmp_path: Path) -> None:
    p = open_partition(tmp_path)
    await p.append(pbatch(8, 0, 0))
    await p.close()
    snapshot = tmp_path / "t-0" / "producer-state.json"
    # as if the snapshot described data that a crash then cut from the log
    snapshot.write_text('{"end_offset": 50, "producers": [[8, 0, [[0, 40, 0, 40]]]]}')
    p = open_partition(tmp_path)
    with pytest.raises(ProducerStateError):
        await p.append(pbatch(8, 0, 5))  # the log says the last sequence was 0
    assert (await p.append(pbatch(8, 0, 1))).base_offset == 1
    await p.close()
