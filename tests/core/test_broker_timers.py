"""The broker's periodic work runs on its clock: a virtual clock drives it, with no real sleeps.

Retention (the maintenance timer), the periodic fsync of ``--fsync interval`` and the queue
timer (message TTL, delayed messages) each fire only when virtual time reaches them. The
queues here are in memory, so their work ends within the loop turns ``run_for`` lets pass. The
periodic fsync ends on a worker thread: ``wait_until`` yields to the loop until its result is
in, and the interval is a virtual minute, far longer than that wait could last in real time.
"""

import asyncio
from collections.abc import Callable
from pathlib import Path

from wharf.core.broker import Broker
from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.testing.clock import VirtualClock


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def test_retention_deletes_expired_segments_after_one_maintenance_interval(
    tmp_path: Path,
) -> None:
    clock = VirtualClock(start_ms=1_000_000)
    config = BrokerConfig(retention_check_interval_ms=10_000)
    async with Broker.open(tmp_path, config, clock=clock) as broker:
        await broker.create_topic("t", configs={"retention.ms": "60000", "segment.bytes": "100"})
        for i in range(5):
            await broker.produce("t", b"x" * 80, timestamp_ms=clock.now_ms() - 120_000 + i)
        await broker.produce("t", b"fresh", timestamp_ms=clock.now_ms())
        part = broker.topics.partition("t", 0)
        await clock.run_for(9_999)
        assert part.log_start_offset == 0
        await clock.run_for(1)
        assert part.log_start_offset == 5
        assert [r.value for r in await broker.fetch("t", 0, 5)] == [b"fresh"]


async def test_interval_fsync_makes_an_append_durable_once_the_interval_passes(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    config = BrokerConfig(fsync=FsyncPolicy.INTERVAL, fsync_interval_ms=60_000)
    async with Broker.open(tmp_path, config, clock=clock) as broker:
        await broker.create_topic("t", 1)
        part = broker.topics.partition("t", 0)
        await clock.run_for(60_000)  # the tick of an empty log flushes nothing
        assert part.committer.fsyncs == 0
        await broker.produce("t", b"v")
        await clock.run_for(59_999)
        assert (part.committer.durable_offset, part.committer.fsyncs) == (0, 0)
        await clock.run_for(1)
        await wait_until(lambda: part.committer.durable_offset == 1)
        assert part.committer.fsyncs == 1


async def test_a_message_past_its_ttl_is_dead_lettered_by_the_queue_timer(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    config = BrokerConfig(fsync=FsyncPolicy.NEVER)
    async with Broker.open(tmp_path, config, clock=clock) as broker:
        dead = await broker.declare_queue("dead", durable=False)
        args = {
            "x-message-ttl": 5_000,
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": "dead",
        }
        live = await broker.declare_queue("live", durable=False, arguments=args)
        await broker.publish("live", b"short-lived", persistent=False)
        await clock.run_for(4_999)
        assert (live.message_count, dead.message_count) == (1, 0)
        await clock.run_for(1)
        assert (live.message_count, dead.message_count) == (0, 1)
        received = await broker.get("dead", no_ack=True)
        assert received is not None and received.body == b"short-lived"


async def test_a_delayed_message_is_released_at_its_due_time_sooner_than_the_next_tick(
    tmp_path: Path,
) -> None:
    clock = VirtualClock()
    config = BrokerConfig(fsync=FsyncPolicy.NEVER)
    async with Broker.open(tmp_path, config, clock=clock) as broker:
        await broker.declare_exchange(
            "later", "x-delayed-message", durable=False, arguments={"x-delayed-type": "direct"}
        )
        queue = await broker.declare_queue("q", durable=False)
        await broker.bind_queue("q", "later", "k")
        # the queue timer is armed a second ahead; holding a 300 ms message re-arms it sooner
        await broker.publish(
            "later", b"late", routing_key="k", headers={"x-delay": 300}, persistent=False
        )
        await clock.run_for(299)
        assert queue.message_count == 0
        await clock.run_for(1)
        assert queue.message_count == 1
        received = await broker.get("q", no_ack=True)
        assert received is not None and received.body == b"late"
