import asyncio
import errno
import os
from pathlib import Path

import pytest

from wharf.core.broker import Broker
from wharf.core.config import BrokerConfig
from wharf.core.streams.errors import ErrorCode, StreamsError, UnknownTopicError
from wharf.core.streams.partitioner import key_partition
from wharf.errors import ResourceLockedError, StorageError
from wharf.testing.clock import VirtualClock


async def test_data_directory_is_locked_while_open(tmp_path: Path) -> None:
    async with Broker.open(tmp_path / "data") as broker:
        assert broker.path == tmp_path / "data"
        assert (tmp_path / "data" / "wharf.pid").read_text() == f"{os.getpid()}\n"
        refusal = rf"in use by another wharf broker \(pid {os.getpid()}\)"
        with pytest.raises(ResourceLockedError, match=refusal):
            async with Broker.open(tmp_path / "data"):
                pass
        assert not broker.closed  # the refused one left the lock to its holder
        assert (tmp_path / "data" / "wharf.pid").read_text() == f"{os.getpid()}\n"
    assert broker.closed
    assert (tmp_path / "data" / "wharf.pid").read_text() == ""  # released
    async with Broker.open(tmp_path / "data") as again:
        assert not again.closed


async def test_produce_and_fetch_with_kafka_key_partitioning(tmp_path: Path) -> None:
    async with Broker.open(tmp_path) as broker:
        await broker.create_topic("orders", partitions=4)
        placed = [await broker.produce("orders", b"v%d" % i, key=b"k%d" % i) for i in range(20)]
        for i, (partition, _) in enumerate(placed):
            assert partition == key_partition(b"k%d" % i, 4)
        spread = [await broker.produce("orders", b"x") for _ in range(8)]
        assert sorted(p for p, _ in spread) == [0, 0, 1, 1, 2, 2, 3, 3]
        pinned = await broker.produce(
            "orders", b"h", headers=[("h", b"1")], partition=2, timestamp_ms=1234
        )
        records = await broker.fetch("orders", 2, pinned[1])
        assert [(r.value, r.headers, r.timestamp_ms) for r in records] == [
            (b"h", (("h", b"1"),), 1234)
        ]
        total = [len(await broker.fetch("orders", p, 0, max_records=100)) for p in range(4)]
        assert sum(total) == 29
        assert sum(p.messages_in for p in broker.topics.partitions()) == 29
        assert len(await broker.fetch("orders", 0, 0, max_records=1)) == 1


async def test_fetch_long_polls_until_a_record_arrives(tmp_path: Path) -> None:
    async with Broker.open(tmp_path) as broker:
        await broker.create_topic("t")
        waiting = asyncio.create_task(broker.fetch("t", 0, 0, timeout_s=30))
        await asyncio.sleep(0.02)
        assert not waiting.done()
        await broker.produce("t", b"wake")
        records = await asyncio.wait_for(waiting, 10)
        assert [r.value for r in records] == [b"wake"]
        assert await broker.fetch("t", 0, 1, timeout_s=0.05) == []


async def test_committed_offsets_survive_restart_and_topic_deletion_clears_them(
    tmp_path: Path,
) -> None:
    async with Broker.open(tmp_path) as broker:
        await broker.create_topic("a", partitions=2)
        await broker.create_topic("b")
        await broker.commit_offsets("g", {("a", 0): 10, ("a", 1): 3, ("b", 0): 7})
        producer = await broker.init_producer_id()
    async with Broker.open(tmp_path) as broker:
        assert broker.committed_offsets("g") == {("a", 0): 10, ("a", 1): 3, ("b", 0): 7}
        assert broker.committed_offsets("g", [("a", 1)]) == {("a", 1): 3}
        await broker.delete_topic("a")
        assert broker.committed_offsets("g") == {("b", 0): 7}
        assert (await broker.init_producer_id())[0] > producer[0]
        with pytest.raises(UnknownTopicError):
            await broker.fetch("a", 0, 0)


async def test_auto_creation_can_be_turned_off(tmp_path: Path) -> None:
    async with Broker.open(tmp_path, BrokerConfig(auto_create_topics=False)) as broker:
        with pytest.raises(UnknownTopicError):
            await broker.produce("nope", b"v")
    async with Broker.open(tmp_path / "auto") as broker:
        assert await broker.produce("made", b"v") == (0, 0)


async def test_maintenance_applies_retention_and_offset_expiry(tmp_path: Path) -> None:
    clock = VirtualClock(start_ms=1_000_000)
    config = BrokerConfig(offsets_retention_ms=60_000)
    async with Broker.open(tmp_path, config, clock=clock) as broker:
        await broker.create_topic("t", configs={"retention.ms": "60000", "segment.bytes": "100"})
        for i in range(5):
            await broker.produce("t", b"x" * 80, timestamp_ms=clock.now_ms() + i)
        await broker.commit_offsets("g", {("t", 0): 5})
        clock.advance(120_000)
        await broker.produce("t", b"fresh", timestamp_ms=clock.now_ms())
        await broker.run_maintenance()
        part = broker.topics.partition("t", 0)
        assert part.log_start_offset == 5
        assert [r.value for r in await broker.fetch("t", 0, 5)] == [b"fresh"]
        assert broker.committed_offsets("g") == {}


async def test_log_append_time_comes_from_the_broker_clock(tmp_path: Path) -> None:
    clock = VirtualClock(start_ms=1_000_000)
    async with Broker.open(tmp_path, clock=clock) as broker:
        await broker.create_topic("stamped", configs={"message.timestamp.type": "LogAppendTime"})
        clock.advance(500)
        _, offset = await broker.produce("stamped", b"v", timestamp_ms=1234)
        [record] = await broker.fetch("stamped", 0, offset)
        assert record.timestamp_ms == 1_000_500


async def test_init_producer_id_allocates_and_bumps_epochs(tmp_path: Path) -> None:
    async with Broker.open(tmp_path) as broker:
        pid, epoch = await broker.init_producer_id()
        assert epoch == 0
        assert await broker.init_producer_id(pid, 0) == (pid, 1)
        fresh, fresh_epoch = await broker.init_producer_id(pid, 2**15 - 2)
        assert fresh != pid and fresh_epoch == 0
        with pytest.raises(StreamsError) as unknown:
            await broker.init_producer_id(10_000_000, 0)
        assert unknown.value.code is ErrorCode.INVALID_PRODUCER_ID_MAPPING
    async with Broker.open(tmp_path) as broker:
        assert await broker.init_producer_id(pid, 1) == (pid, 2)  # still known after restart


async def test_failed_fsync_fences_its_partition_until_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fdatasync = os.fdatasync
    doomed: set[int] = set()  # inodes whose next fdatasync fails

    def failing_once(fd: int) -> None:
        inode = os.fstat(fd).st_ino
        if inode in doomed:
            doomed.discard(inode)
            raise OSError(errno.EIO, "injected I/O error")
        fdatasync(fd)

    monkeypatch.setattr(os, "fdatasync", failing_once)
    async with Broker.open(tmp_path / "data") as broker:
        await broker.create_topic("fenced", partitions=1)
        await broker.create_topic("fine", partitions=1)
        assert await broker.produce("fenced", b"kept", partition=0) == (0, 0)
        [segment] = (tmp_path / "data" / "topics" / "fenced-0").glob("*.log")
        doomed.add(segment.stat().st_ino)
        with pytest.raises(StorageError, match="fsync failed"):
            await broker.produce("fenced", b"not acknowledged", partition=0)
        # However the disk behaves now, the partition reports nothing more as durable.
        with pytest.raises(StorageError, match="no more appends"):
            await broker.produce("fenced", b"refused", partition=0)
        assert [r.value for r in await broker.fetch("fenced", 0, 0)] == [b"kept"]
        assert await broker.produce("fine", b"other topics go on", partition=0) == (0, 0)

    async with Broker.open(tmp_path / "data") as broker:
        values = [r.value for r in await broker.fetch("fenced", 0, 0)]
        assert values[0] == b"kept" and b"refused" not in values
        partition, offset = await broker.produce("fenced", b"after the restart", partition=0)
        assert [r.value for r in await broker.fetch("fenced", 0, offset)] == [b"after the restart"]
        assert [r.value for r in await broker.fetch("fine", 0, 0)] == [b"other topics go on"]
