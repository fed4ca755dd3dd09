"""Large message bodies of a cluster through two brokers on one database: kept in the object
store, one object for a publish routed to several queues, read back by the node that claims,
deleted by the collector once acknowledged everywhere, never lost to a failed read."""

from __future__ import annotations

import asyncio
import os

import pytest

from wharf.cluster.objectstore import ObjectStore
from wharf.cluster.queues.bodies import BODY_PREFIX
from wharf.core.broker import Broker
from wharf.core.queues.cluster_registry import ClusterVhostRegistry, QueueEngine
from wharf.errors import StorageError

BOUND_S = 20.0
MIB = os.urandom(1 << 20)


def engine(broker: Broker) -> QueueEngine:
    assert isinstance(broker.vhosts, ClusterVhostRegistry)
    return broker.vhosts.engine


async def objects(store: ObjectStore) -> int:
    return len(await store.list(BODY_PREFIX))


async def test_a_large_body_published_to_two_queues_is_one_object_until_both_acks(
    two_brokers: tuple[Broker, Broker], test_store: ObjectStore
) -> None:
    one, two = two_brokers
    await one.declare_exchange("fan", "fanout")
    for name in ("a", "b"):
        await one.declare_queue(name)
        await one.bind_queue(name, "fan")
    await one.publish("fan", MIB, routing_key="")
    await one.publish("fan", b"small", routing_key="")
    assert await objects(test_store) == 1
    await two.declare_queue("a", passive=True)  # this node's cache has them now
    got = []
    for name in ("a", "b"):
        received = await two.get(name)
        assert received is not None and received.body == MIB
        got.append(received)
    await engine(one).collect_bodies()
    assert await objects(test_store) == 1  # both rows still name it
    await got[0].ack()
    await asyncio.sleep(0.2)
    await engine(one).collect_bodies()
    assert await objects(test_store) == 1
    await got[1].ack()
    async with asyncio.timeout(BOUND_S):
        while await objects(test_store):
            await engine(two).collect_bodies()
            await asyncio.sleep(0.1)
    small = await two.get("a")
    assert small is not None and small.body == b"small"


async def test_a_body_that_cannot_be_read_now_is_delivered_later(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.declare_queue("q")
    await one.publish("q", MIB)
    await two.declare_queue("q", passive=True)
    bodies = engine(two).bodies
    real = bodies.fetch

    async def unreadable(keys: object) -> dict[str, bytes | Exception]:
        return {key: StorageError("the object store is down") for key in await real(keys)}

    bodies.fetch = unreadable  # type: ignore[method-assign]
    with pytest.raises(StorageError, match="could be read"):  # as when the database fails
        await two.get("q")
    bodies.fetch = real  # type: ignore[method-assign]
    async with asyncio.timeout(BOUND_S):
        while (received := await two.get("q")) is None:
            await asyncio.sleep(0.05)
    assert received.body == MIB and not received.redelivered
    await received.ack()


async def test_a_large_delayed_message_keeps_its_object_until_consumed(
    two_brokers: tuple[Broker, Broker], test_store: ObjectStore
) -> None:
    one, two = two_brokers
    await one.declare_exchange("later", "x-delayed-message",
                               arguments={"x-delayed-type": "direct"})  # fmt: skip
    await one.declare_queue("q")
    await one.bind_queue("q", "later", "k")
    await one.publish("later", MIB, routing_key="k", headers={"x-delay": 300})
    await engine(one).collect_bodies()
    assert await objects(test_store) == 1  # held: its row names it
    await two.declare_queue("q", passive=True)
    async with asyncio.timeout(BOUND_S):
        while (received := await two.get("q")) is None:
            await asyncio.sleep(0.05)
    assert received.body == MIB
    await received.ack()
    async with asyncio.timeout(BOUND_S):
        while await objects(test_store):
            await engine(one).collect_bodies()
            await asyncio.sleep(0.1)


async def test_a_dead_lettered_large_body_keeps_its_object(
    two_brokers: tuple[Broker, Broker], test_store: ObjectStore
) -> None:
    """The dead-lettered copy names the original's body object, in the transaction that
    deletes the original, so the collector keeps the object for the copy."""
    one, two = two_brokers
    await one.declare_queue("dead")
    await one.declare_queue("work", arguments={"x-dead-letter-exchange": "",
                                               "x-dead-letter-routing-key": "dead"})  # fmt: skip
    await one.publish("work", MIB)
    await two.declare_queue("work", passive=True)
    await two.declare_queue("dead", passive=True)
    async with asyncio.timeout(BOUND_S):
        rejected = await two.get("work")
        assert rejected is not None and rejected.body == MIB
        await rejected.reject(requeue=False)
        copy = None
        while copy is None:
            await engine(one).collect_bodies()
            copy = await one.get("dead")
            await asyncio.sleep(0.05)
    assert copy.body == MIB
    assert copy.headers["x-death"][0]["reason"] == "rejected"
    await copy.ack()
    async with asyncio.timeout(BOUND_S):
        while await objects(test_store):
            await engine(two).collect_bodies()
            await asyncio.sleep(0.1)
