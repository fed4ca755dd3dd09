"""Group commit against a flush target whose fsync the test can hold open.

The target stands in for the one method group commit calls on a log (``flush`` on a worker
thread); it lets the test make appends arrive *while* an fsync is running, which a real disk does
not do on demand. Group commit over a real storage log is covered in streams/test_partition.py.
"""

import asyncio
import errno
import os
import threading
from pathlib import Path

import pytest

from wharf.core.broker import Broker
from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.durability import GroupCommitter, run_to_end
from wharf.core.stats import FSYNC_BUCKETS_S, HistogramFamily
from wharf.core.users import hash_password
from wharf.errors import StorageError


class GatedLog:
    def __init__(self) -> None:
        self.next_offset = 0
        self.flushes = 0
        self.gate = threading.Event()
        self.gate.set()
        self.started = threading.Event()
        self.fail_with: StorageError | None = None

    def append(self, n: int) -> int:
        self.next_offset += n
        return self.next_offset

    def flush(self) -> int:
        covered = self.next_offset
        self.started.set()
        assert self.gate.wait(30)
        self.flushes += 1
        if self.fail_with is not None:
            raise self.fail_with
        return covered


async def wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_appends_during_an_fsync_share_the_next_one() -> None:
    log = GatedLog()
    advanced: list[int] = []
    committer = GroupCommitter(log, FsyncPolicy.ALWAYS, on_durable=advanced.append)
    log.gate.clear()
    first = asyncio.create_task(committer.wait_durable(log.append(1)))
    await asyncio.to_thread(log.started.wait, 10)
    later = [asyncio.create_task(committer.wait_durable(log.append(1))) for _ in range(20)]
    await asyncio.sleep(0.01)
    assert not first.done() and not any(t.done() for t in later)
    log.gate.set()
    await asyncio.wait_for(asyncio.gather(first, *later), 10)
    assert log.flushes == 2
    assert committer.fsyncs == 2
    assert advanced == [1, 21]
    assert committer.durable_offset == 21
    # already durable: returns without another fsync
    await committer.wait_durable(21)
    assert log.flushes == 2
    await committer.close()


async def test_flush_error_fails_the_waiters_and_a_later_wait_retries() -> None:
    log = GatedLog()
    committer = GroupCommitter(log, FsyncPolicy.ALWAYS)
    log.fail_with = StorageError("disk full", errno=errno.ENOSPC)
    end = log.append(3)
    results = await asyncio.gather(
        committer.wait_durable(end), committer.wait_durable(end), return_exceptions=True
    )
    assert all(isinstance(r, StorageError) and r.errno == errno.ENOSPC for r in results)
    assert committer.durable_offset == 0
    log.fail_with = None
    await committer.wait_durable(end)
    assert committer.durable_offset == 3
    await committer.close()


async def test_interval_policy_does_not_wait_and_flushes_in_background() -> None:
    log = GatedLog()
    committer = GroupCommitter(log, FsyncPolicy.INTERVAL, interval_ms=20)
    committer.start()
    assert committer._ticker._timer is None  # nothing written: no timer at all
    log.gate.clear()
    end = log.append(5)
    committer.written()  # what every writer does after a write
    assert committer._ticker._timer is not None
    await asyncio.wait_for(committer.wait_durable(end), 1)
    log.gate.set()
    await wait_until(lambda: committer.durable_offset == 5)
    flushes = log.flushes
    await asyncio.sleep(0.1)
    assert log.flushes == flushes  # nothing new written, so no further fsync
    assert committer._ticker._timer is None  # and the timer sleeps until the next write
    log.append(3)
    committer.written()
    await wait_until(lambda: committer.durable_offset == 8)
    await committer.close()


async def test_never_policy_never_flushes() -> None:
    log = GatedLog()
    committer = GroupCommitter(log, FsyncPolicy.NEVER, interval_ms=10)
    committer.start()
    await committer.wait_durable(log.append(5))
    await asyncio.sleep(0.05)
    assert log.flushes == 0
    assert await committer.flush_now() == 5
    await committer.close()


async def test_wait_after_close_is_refused() -> None:
    log = GatedLog()
    committer = GroupCommitter(log, FsyncPolicy.ALWAYS)
    await committer.close()
    with pytest.raises(StorageError, match="closed"):
        await committer.wait_durable(log.append(1))


async def test_unexpected_flush_failure_still_reaches_the_waiters() -> None:
    log = GatedLog()
    committer = GroupCommitter(log, FsyncPolicy.ALWAYS)

    def broken_flush() -> int:
        raise OSError(5, "unexpected")

    log.flush = broken_flush  # type: ignore[method-assign]
    with pytest.raises(OSError, match="unexpected"):
        await asyncio.wait_for(committer.wait_durable(log.append(1)), 10)
    await committer.close()


async def test_request_flush_makes_data_durable_without_waiting() -> None:
    log = GatedLog()
    committer = GroupCommitter(log, FsyncPolicy.ALWAYS)
    committer.request_flush(log.append(2))
    await wait_until(lambda: committer.durable_offset == 2)
    committer.request_flush(1)  # already durable: nothing to do
    await asyncio.sleep(0.02)
    assert log.flushes == 1
    await committer.close()


async def test_each_flush_is_timed_into_the_histogram_of_its_log_kind() -> None:
    kind = "test-timed-kind"
    family = HistogramFamily[str](FSYNC_BUCKETS_S)
    log = GatedLog()
    committer = GroupCommitter(log, FsyncPolicy.ALWAYS, kind=kind, fsync_latency=family)
    other = GroupCommitter(GatedLog(), FsyncPolicy.ALWAYS, kind=kind, fsync_latency=family)
    histogram = committer.fsync_latency
    assert other.fsync_latency is histogram  # one histogram per kind, shared
    assert family[kind] is histogram and len(family) == 1
    alone = GroupCommitter(GatedLog(), FsyncPolicy.ALWAYS, kind=kind)
    assert alone.fsync_latency is not histogram  # given none: a histogram of its own
    assert (histogram.count, histogram.sum, sum(histogram.counts)) == (0, 0.0, 0)

    await committer.wait_durable(log.append(1))
    assert histogram.count == 1 and sum(histogram.counts) == 1

    # a flush held open for at least 60 ms lands in a bucket above 50 ms
    log.gate.clear()
    log.started.clear()
    waiting = asyncio.create_task(committer.wait_durable(log.append(1)))
    assert await asyncio.to_thread(log.started.wait, 10)
    await asyncio.sleep(0.06)
    log.gate.set()
    await asyncio.wait_for(waiting, 10)
    assert histogram.count == 2 and sum(histogram.counts) == 2
    above = FSYNC_BUCKETS_S.index(0.05) + 1
    assert sum(histogram.counts[above:]) >= 1
    assert histogram.sum >= 0.06

    # a failed flush is not counted as a completed one
    log.fail_with = StorageError("disk gone", errno=errno.EIO)
    with pytest.raises(StorageError):
        await committer.wait_durable(log.append(1))
    assert histogram.count == 2
    await committer.close()
    await other.close()
    await alone.close()


def record_fsync_threads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """From now on, the name of the thread of every os.fsync and os.fdatasync call."""
    synced_on: list[str] = []
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def fsync(fd: int) -> None:
        synced_on.append(threading.current_thread().name)
        real_fsync(fd)

    def fdatasync(fd: int) -> None:
        synced_on.append(threading.current_thread().name)
        real_fdatasync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return synced_on


def on_the_pool(synced_on: list[str]) -> bool:
    """Whether there were fsyncs and the broker's fsync pool made every one."""
    return bool(synced_on) and all(name.startswith("wharf-fsync_") for name in synced_on)


async def test_no_fsync_of_produce_with_roll_or_queue_reclaim_runs_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = BrokerConfig(fsync=FsyncPolicy.ALWAYS, queue_segment_bytes=4096)
    async with Broker.open(tmp_path, config) as broker:
        await broker.create_topic("t", 1, {"segment.bytes": "1000"})
        queue = await broker.declare_queue("q", durable=True)
        synced_on = record_fsync_threads(monkeypatch)
        loop_thread = threading.current_thread().name

        partition = broker.topics.get("t").partitions[0]
        for i in range(40):
            await broker.produce("t", b"%03d" % i * 30, partition=0)
        assert len(partition.log.segment_base_offsets()) > 2  # rolled
        assert (partition.path / "producer-state.json").exists()  # the snapshot at the roll

        for i in range(200):
            await broker.publish("q", b"x" * 100 + b"%d" % i)
        while (message := await broker.get("q")) is not None:
            await message.ack()
        await broker.vhosts.maintain()  # reclaims the acked segments
        assert queue.store.messages.log_start_offset == queue.store.messages.next_offset
        await queue.store.flush()  # the reclaim's start offset reaches the disk
        assert on_the_pool(synced_on)  # the broker's pool ran the partition's
        assert loop_thread not in synced_on


async def test_no_fsync_of_a_definition_topic_or_producer_id_change_runs_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = BrokerConfig(fsync=FsyncPolicy.ALWAYS, queue_segment_bytes=4096)
    async with Broker.open(tmp_path, config) as broker:
        synced_on = record_fsync_threads(monkeypatch)
        loop_thread = threading.current_thread().name

        await broker.create_topic("t", 2, {"segment.bytes": "1000"})  # catalogue, two logs
        producer_id, _ = await broker.init_producer_id()  # the first id writes the id block
        assert broker.producer_ids.allocated(producer_id)
        for i in range(40):
            await broker.produce("t", b"%03d" % i * 30, partition=0)
        assert len(broker.topics.get("t").partitions[0].log.segment_base_offsets()) > 2

        queue = await broker.declare_queue("q", durable=True)  # definitions and two logs
        await broker.declare_exchange("x", "direct", durable=True)
        await broker.declare_exchange("later", "x-delayed-message", durable=True,
                                      arguments={"x-delayed-type": "direct"})
        await broker.bind_queue("q", "x", "k")
        broker.users.put_user("bob", hash_password("secret"))
        await broker.save_users()
        for i in range(200):
            await broker.publish("x", b"x" * 100 + b"%d" % i, routing_key="k")
        while (message := await broker.get("q")) is not None:
            await message.ack()
        await broker.vhosts.maintain()  # reclaims the acked segments
        assert queue.store.messages.log_start_offset == queue.store.messages.next_offset
        await broker.delete_queue("q")
        await broker.vhosts["/"].delete_exchange("later")
        await broker.delete_topic("t")

        assert on_the_pool(synced_on)
        assert loop_thread not in synced_on
    async with Broker.open(tmp_path, config) as broker:  # and every change was durable
        assert broker.topics.find("t") is None
        assert "x" in broker.vhosts["/"].exchanges and "q" not in broker.vhosts["/"].queues
        assert broker.users.authenticate("bob", "secret").name == "bob"
        assert (await broker.init_producer_id())[0] > producer_id


async def test_no_fsync_of_opening_or_closing_a_broker_runs_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced_on = record_fsync_threads(monkeypatch)
    config = BrokerConfig(fsync=FsyncPolicy.ALWAYS)
    async with Broker.open(tmp_path, config) as broker:  # a fresh data directory
        await broker.create_topic("t", 2)
        await broker.produce("t", b"kept", partition=1)
        await broker.commit_offsets("g", {("t", 1): 1})
        await broker.declare_queue("q", durable=True)
        await broker.declare_exchange("later", "x-delayed-message", durable=True,
                                      arguments={"x-delayed-type": "direct"})
        await broker.publish("q", b"kept")
    async with Broker.open(tmp_path, config) as broker:  # every log recovered
        assert [r.value for r in await broker.fetch("t", 1, 0)] == [b"kept"]
        assert broker.committed_offsets("g") == {("t", 1): 1}
        assert broker.queue("q").message_count == 1
    assert on_the_pool(synced_on)
    assert threading.current_thread().name not in synced_on


async def test_run_to_end_finishes_a_change_whose_caller_was_cancelled() -> None:
    release = asyncio.Event()
    done: list[str] = []

    async def change() -> str:
        await release.wait()
        done.append("changed")
        return "changed"

    release.set()
    assert await run_to_end(change()) == "changed"
    release.clear()
    done.clear()
    caller = asyncio.create_task(run_to_end(change()))
    await asyncio.sleep(0)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert done == []
    release.set()
    await wait_until(lambda: done == ["changed"])
