"""Dead-lettering and reject-publish across two brokers on one database: what one node rejects,
lets expire, drops or refuses reaches the dead-letter queue with RabbitMQ's x-death headers, and
is consumed on the other node."""

from __future__ import annotations

import asyncio
from typing import Any

from wharf.cluster.queues.dead_letters import DeadMessage
from wharf.core.broker import Broker
from wharf.core.queues.cluster_queue import ClusterQueue
from wharf.core.queues.cluster_vhost import ClusterVirtualHost
from wharf.core.queues.embedded import ReceivedMessage
from wharf.core.queues.message import Message

BOUND_S = 20.0


async def setup(one: Broker, two: Broker, **arguments: Any) -> None:
    """Queue ``work`` dead-letters to exchange ``dlx`` (fanout) bound to queue ``dead``, on
    both nodes' caches."""
    await one.declare_exchange("dlx", "fanout")
    await one.declare_queue("dead")
    await one.bind_queue("dead", "dlx", "")
    await one.declare_queue("work", arguments={"x-dead-letter-exchange": "dlx", **arguments})
    await two.declare_queue("work", passive=True)
    await two.declare_queue("dead", passive=True)


async def next_of(broker: Broker, queue: str) -> ReceivedMessage:
    async with asyncio.timeout(BOUND_S):
        while (received := await broker.get(queue)) is None:
            await asyncio.sleep(0.05)
    return received


def death(received: ReceivedMessage) -> dict[str, Any]:
    [entry] = received.headers["x-death"]
    assert isinstance(entry, dict)
    return entry


async def test_a_message_rejected_on_one_node_is_dead_lettered_to_the_other(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await setup(one, two)
    await one.publish("", b"poison", routing_key="work", headers={"k": "v"})
    rejected = await next_of(two, "work")
    await rejected.reject(requeue=False)
    dead = await next_of(one, "dead")
    assert dead.body == b"poison"
    assert (dead.exchange, dead.routing_key) == ("dlx", "work")
    entry = death(dead)
    assert {k: entry[k] for k in ("count", "reason", "queue", "exchange", "routing-keys")} == {
        "count": 1, "reason": "rejected", "queue": "work", "exchange": "", "routing-keys": ["work"],
    }  # fmt: skip
    assert "time" in entry
    headers = dead.headers
    assert headers["k"] == "v"
    assert (headers["x-first-death-queue"], headers["x-first-death-reason"]) == ("work", "rejected")
    assert headers["x-last-death-exchange"] == ""
    await dead.ack()
    assert await one.get("work") is None


async def test_expired_messages_are_dead_lettered_by_the_sweep(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await setup(one, two, **{"x-message-ttl": 100})
    await one.publish("work", b"late")
    await one.publish("work", b"later", expiration_ms=50)
    got = [await next_of(two, "dead") for _ in range(2)]
    assert sorted(m.body for m in got) == [b"late", b"later"]
    for received in got:
        assert death(received)["reason"] == "expired"
    by_body = {m.body: m for m in got}
    assert death(by_body[b"later"])["original-expiration"] == "50"
    assert by_body[b"later"].message.expiration_ms is None
    assert "original-expiration" not in death(by_body[b"late"])


async def test_expired_messages_a_consumer_meets_are_dead_lettered(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await setup(one, two)
    await one.publish("work", b"stale", expiration_ms=1)
    await one.publish("work", b"live")
    await asyncio.sleep(0.05)
    received = await next_of(two, "work")  # the expired head is not delivered
    assert received.body == b"live"
    dead = await next_of(one, "dead")
    assert (dead.body, death(dead)["reason"]) == (b"stale", "expired")


async def test_drop_head_dead_letters_the_oldest(two_brokers: tuple[Broker, Broker]) -> None:
    one, two = two_brokers
    await setup(one, two, **{"x-max-length": 1})
    await one.publish("work", b"first")
    await two.publish("work", b"second")
    dead = await next_of(one, "dead")
    assert (dead.body, death(dead)["reason"]) == (b"first", "maxlen")
    assert (await next_of(one, "work")).body == b"second"


async def test_a_message_over_its_delivery_limit_is_dead_lettered(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await setup(one, two, **{"x-delivery-limit": 1})
    await one.publish("work", b"poison")
    for broker in (one, two):  # returned twice: the second is over the limit
        await (await next_of(broker, "work")).reject(requeue=True)
    dead = await next_of(two, "dead")
    assert (dead.body, death(dead)["reason"]) == (b"poison", "delivery_limit")
    assert await one.get("work") is None


async def test_reject_publish_refuses_a_publish_to_a_full_queue(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.declare_queue("full", arguments={"x-max-length": 1, "x-overflow": "reject-publish"})
    await two.declare_queue("full", passive=True)
    assert not (await one.publish("full", b"in")).rejected
    refused = await two.publish("full", b"out")
    assert refused.rejected
    received = await next_of(two, "full")
    assert received.body == b"in"
    await received.ack()
    assert not (await two.publish("full", b"room again")).rejected


async def test_reject_publish_dlx_dead_letters_what_it_refuses(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await setup(one, two, **{"x-max-length": 1, "x-overflow": "reject-publish-dlx"})
    assert not (await one.publish("work", b"in")).rejected
    assert (await two.publish("work", b"out")).rejected
    dead = await next_of(one, "dead")
    assert (dead.body, death(dead)["reason"]) == (b"out", "maxlen")
    assert (await next_of(one, "work")).body == b"in"


async def test_a_dead_letter_cycle_is_dropped_unless_a_consumer_rejected_on_the_way(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, _ = two_brokers
    for name, to in (("a", "b"), ("b", "a")):
        await one.declare_queue(name, arguments={"x-dead-letter-exchange": "",
                                                 "x-dead-letter-routing-key": to})  # fmt: skip
    vhost = one.vhosts["/"]
    a, b = one.queue("a"), one.queue("b")
    assert isinstance(vhost, ClusterVirtualHost)
    assert isinstance(a, ClusterQueue) and isinstance(b, ClusterQueue)
    for reason, kept in (("expired", False), ("rejected", True)):
        fresh = Message.build("", "a", b"m")
        [row] = vhost.dead_letter_rows(
            a, DeadMessage(a.queue_id, "", "a", fresh.properties, b"m", reason)
        )
        assert row.queue_id == b.queue_id
        back = vhost.dead_letter_rows(
            b, DeadMessage(b.queue_id, "", "b", row.properties, b"m", "expired")
        )
        assert [r.queue_id for r in back] == ([a.queue_id] if kept else [])
