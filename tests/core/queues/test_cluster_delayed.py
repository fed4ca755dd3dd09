"""Delayed exchanges (x-delayed-message) of a cluster through two brokers on one database:
held on one node, released once due by whichever node releases, routed by the bindings in
force when the delay ends, without their x-delay header."""

from __future__ import annotations

import asyncio

from wharf.core.broker import Broker
from wharf.core.queues.cluster_registry import ClusterVhostRegistry

BOUND_S = 20.0
DELAYED = {"x-delayed-type": "direct"}


async def held_count(broker: Broker) -> int:
    assert isinstance(broker.vhosts, ClusterVhostRegistry)
    async with broker.vhosts.engine.node.db.transaction() as tx:
        return int(await tx.fetchval("SELECT count(*) FROM amqp_held"))


async def next_body(broker: Broker, queue: str) -> tuple[bytes, dict[str, object]]:
    async with asyncio.timeout(BOUND_S):
        while (received := await broker.get(queue)) is None:
            await asyncio.sleep(0.05)
    await received.ack()
    return received.body, received.headers


async def test_a_delayed_message_held_on_one_node_is_consumed_on_the_other(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.declare_exchange("later", "x-delayed-message", arguments=DELAYED)
    await one.declare_queue("q")
    await one.bind_queue("q", "later", "k")
    await two.declare_queue("q", passive=True)  # this node's cache has it now
    assert (await one.publish("later", b"in a minute", routing_key="k",
                              headers={"x-delay": 60_000})).routed  # fmt: skip
    assert (await one.publish("later", b"soon", routing_key="k",
                              headers={"x-delay": 200, "h": 1})).routed  # fmt: skip
    await one.publish("later", b"now", routing_key="k")
    assert await next_body(two, "q") == (b"now", {})
    assert await next_body(two, "q") == (b"soon", {"h": 1})  # without its x-delay
    assert await held_count(one) == 1  # the one due in a minute
    assert await two.get("q") is None


async def test_a_held_message_is_routed_by_the_bindings_in_force_when_it_is_due(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.declare_exchange("later", "x-delayed-message",
                               arguments={"x-delayed-type": "topic"})  # fmt: skip
    result = await one.publish("later", b"held", routing_key="a.b", headers={"x-delay": 500})
    assert result.routed  # held, as RabbitMQ's plugin counts it
    await two.declare_queue("bound-later")
    await two.bind_queue("bound-later", "later", "a.*")
    assert await next_body(two, "bound-later") == (b"held", {})
    assert await held_count(one) == 0


async def test_holds_of_a_deleted_delayed_exchange_are_dropped(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.declare_exchange("later", "x-delayed-message", arguments=DELAYED)
    await one.publish("later", b"x", routing_key="k", headers={"x-delay": 60_000})
    assert await held_count(two) == 1
    await two.vhosts["/"].delete_exchange("later")
    assert await held_count(one) == 0
