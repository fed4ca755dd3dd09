"""The cluster's consumer registry through the embedded API of two brokers on one database:
single active consumer handed over between nodes, exclusive consumers refused cluster-wide,
auto-delete queues deleted when their last consumer anywhere goes, x-expires queues deleted
when unused, and consumer counts that cover both nodes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack

import pytest

from wharf.cluster.database import Database
from wharf.cluster.queues import definitions as defs
from wharf.cluster.queues import messages as msgs
from wharf.core.broker import Broker
from wharf.core.queues import cluster_registry
from wharf.core.queues.cluster_registry import ClusterVhostRegistry
from wharf.core.queues.embedded import QueueSubscription
from wharf.errors import AccessRefusedError, NotFoundError

BOUND_S = 20.0
SAC = {"x-single-active-consumer": True}


async def until(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(BOUND_S):
        while not await check():
            await asyncio.sleep(0.05)


async def take(messages: QueueSubscription, *, ack: bool = True) -> bytes:
    async with asyncio.timeout(BOUND_S):
        received = await anext(messages)
    if ack:
        await received.ack()
    return received.body


async def queue_names(broker: Broker) -> list[str]:
    assert broker.cluster is not None
    return [q.name for q in (await defs.load_definitions(broker.cluster.db)).queues]


async def consumers_seen_by(broker: Broker, queue: str) -> int:
    return (await broker.declare_queue(queue, passive=True)).consumer_count


async def test_the_single_active_consumer_moves_to_the_other_node_when_it_leaves(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.declare_queue("sac", arguments=SAC)
    await two.declare_queue("sac", arguments=SAC)
    async with AsyncExitStack() as on_two:
        async with one.consume("sac", prefetch=10) as first:
            second = await on_two.enter_async_context(two.consume("sac", prefetch=10))
            assert one.queue("sac").active_consumer is not None
            assert two.queue("sac").active_consumer is None
            for i in range(5):
                await one.publish("sac", b"%d" % i)
            assert [await take(first) for _ in range(5)] == [b"%d" % i for i in range(5)]
            for i in range(5, 8):
                await one.publish("sac", b"%d" % i)
            assert await take(first, ack=False) == b"5"  # held when its consumer leaves
            assert second.unsettled == 0
        # the first consumer left: the next registered one, on the other node, takes over
        assert [await take(second) for _ in range(3)] == [b"5", b"6", b"7"]
        await two.publish("sac", b"8")
        assert await take(second) == b"8"
        assert two.queue("sac").active_consumer is not None


async def test_an_exclusive_consumer_on_one_node_refuses_consumers_on_both(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.declare_queue("ex")
    await two.declare_queue("ex", passive=True)
    async with one.consume("ex", exclusive=True):
        for broker in (one, two):
            with pytest.raises(AccessRefusedError, match="in exclusive use"):
                async with broker.consume("ex"):
                    pass
        assert await consumers_seen_by(two, "ex") == 1
    await until(lambda: _no_consumers(two, "ex"))
    async with two.consume("ex"):
        with pytest.raises(AccessRefusedError, match="in exclusive use"):
            async with one.consume("ex", exclusive=True):
                pass


async def _no_consumers(broker: Broker, queue: str) -> bool:
    return await consumers_seen_by(broker, queue) == 0


async def test_a_shared_auto_delete_queue_goes_when_its_last_consumer_anywhere_does(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.declare_queue("auto", auto_delete=True)
    await two.declare_queue("auto", auto_delete=True)
    swept = sweeps(two_brokers)
    await until(lambda: _swept(two_brokers, swept + 2))
    assert "auto" in await queue_names(one)  # never had a consumer: kept
    async with one.consume("auto"):
        async with two.consume("auto"):
            assert await consumers_seen_by(one, "auto") == 2
        await until(lambda: _consumers_are(one, "auto", 1))
        assert "auto" in await queue_names(one)
    await until(lambda: _gone(two, "auto"))


def sweeps(brokers: tuple[Broker, Broker]) -> int:
    """Sweeps run so far, by either node."""
    total = 0
    for broker in brokers:
        assert isinstance(broker.vhosts, ClusterVhostRegistry)
        total += broker.vhosts.engine.sweeps
    return total


async def _swept(brokers: tuple[Broker, Broker], count: int) -> bool:
    return sweeps(brokers) >= count


async def _consumers_are(broker: Broker, queue: str, count: int) -> bool:
    return await consumers_seen_by(broker, queue) == count


async def _gone(broker: Broker, queue: str) -> bool:
    try:
        await broker.declare_queue(queue, passive=True)
    except NotFoundError:
        return True
    return False


async def test_an_unused_x_expires_queue_is_deleted_and_a_consumed_one_kept(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.declare_queue("idle", arguments={"x-expires": 300})
    await two.declare_queue("kept", arguments={"x-expires": 300})
    async with two.consume("kept"):
        await until(lambda: _not_listed(two, "idle"))
        assert "kept" in await queue_names(two)
        swept = sweeps(two_brokers)
        await until(lambda: _swept(two_brokers, swept + 2))
        assert "kept" in await queue_names(two)  # its consumer keeps it
    await until(lambda: _not_listed(two, "kept"))  # unused from its consumer's departure on
    await until(lambda: _gone(one, "idle"))


async def _not_listed(broker: Broker, queue: str) -> bool:
    return queue not in await queue_names(broker)


async def test_consumers_registered_under_a_lost_epoch_are_cancelled(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    assert one.cluster is not None
    await one.declare_queue("epochs")
    await two.declare_queue("epochs", passive=True)
    async with one.consume("epochs") as messages:
        assert await consumers_seen_by(two, "epochs") == 1
        await one.cluster.membership.register()  # a new epoch: the old one's rows are not ours
        one.queue("epochs").dispatch()
        assert messages.ended
        await until(lambda: _no_consumers(two, "epochs"))  # the sweep removed the old row


async def test_basic_get_takes_from_a_single_active_consumer_queue_on_any_node(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.declare_queue("sac-get", arguments=SAC)
    await two.declare_queue("sac-get", arguments=SAC)
    await one.publish("sac-get", b"x")
    received = await two.get("sac-get")  # no consumer is active here (or anywhere)
    assert received is not None and received.body == b"x"
    await received.ack()


async def test_a_node_hears_of_the_queues_messages_only_while_it_has_consumers(
    two_brokers: tuple[Broker, Broker], db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node that only publishes holds no ``LISTEN`` on the messages' channel; a consumer's
    registration opens one, which closes once no consumer has been there for
    ``MESSAGES_IDLE_S``; a message published meanwhile waits for the next consumer."""
    monkeypatch.setattr(cluster_registry, "MESSAGES_IDLE_S", 0.2)
    one, two = two_brokers
    assert isinstance(one.vhosts, ClusterVhostRegistry)
    assert isinstance(two.vhosts, ClusterVhostRegistry)

    async def listening() -> int:
        """Sessions listening on the messages' channel (the two nodes share one database
        client here, so its sessions do not say which node they serve)."""
        rows = await db.statement(
            "SELECT count(*) FROM pg_stat_activity WHERE query = %s", (f"LISTEN {msgs.CHANNEL}",)
        )
        return int(rows[0][0])

    await one.declare_queue("jobs")
    await two.declare_queue("jobs")  # known there now, not when the catalogue's news arrives
    await one.publish("", b"first", routing_key="jobs")
    assert not one.vhosts.engine.hears_messages and not two.vhosts.engine.hears_messages
    assert await listening() == 0
    async with two.consume("jobs", prefetch=1) as messages:
        assert two.vhosts.engine.hears_messages
        await until(lambda: _equal(listening(), 1))
        assert await take(messages) == b"first"
        await one.publish("", b"second", routing_key="jobs")
        assert await take(messages) == b"second"
    assert not one.vhosts.engine.hears_messages
    await until(lambda: _equal(listening(), 0))
    assert not two.vhosts.engine.hears_messages
    await one.publish("", b"third", routing_key="jobs")
    async with one.consume("jobs", prefetch=1) as messages:
        assert await take(messages) == b"third"
        assert one.vhosts.engine.hears_messages


async def _equal(found: Awaitable[int], expected: int) -> bool:
    return await found == expected
