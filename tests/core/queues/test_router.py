"""Routing a publish: the standard exchanges, unroutable messages, exchange-to-exchange bindings,
alternate exchanges and delayed messages."""

from __future__ import annotations

import pytest
from queue_helpers import Opener

from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.queues.message import Message
from wharf.core.queues.vhost import VirtualHost
from wharf.errors import (
    AccessRefusedError,
    NotFoundError,
)
from wharf.testing.clock import VirtualClock


@pytest.fixture
def registry_config() -> BrokerConfig:
    return BrokerConfig(fsync=FsyncPolicy.NEVER)


def drain(vhost: VirtualHost, queue: str) -> list[bytes]:
    q = vhost.queues[queue]
    return [d.message.body for d in iter(lambda: q.basic_get(no_ack=True), None)]


async def test_standard_exchanges_route(vhost: VirtualHost) -> None:
    for name in ["a", "b"]:
        await vhost.declare_queue(name)
    await vhost.bind_queue("a", "amq.direct", "k")
    await vhost.bind_queue("a", "amq.fanout", "")
    await vhost.bind_queue("b", "amq.fanout", "")
    await vhost.bind_queue("b", "amq.topic", "x.*")
    await vhost.bind_queue("a", "amq.match", "", {"x-match": "any", "h": 1})
    vhost.publish_nowait(Message.build("amq.direct", "k", b"direct"))
    vhost.publish_nowait(Message.build("amq.fanout", "", b"fanout"))
    vhost.publish_nowait(Message.build("amq.topic", "x.y", b"topic"))
    vhost.publish_nowait(Message.build("amq.headers", "", b"nobody"))
    vhost.publish_nowait(Message.build("amq.match", "", b"headers", headers={"h": 1}))
    vhost.publish_nowait(Message.build("", "b", b"default"))
    assert drain(vhost, "a") == [b"direct", b"fanout", b"headers"]
    assert drain(vhost, "b") == [b"fanout", b"topic", b"default"]


async def test_unroutable_and_errors(vhost: VirtualHost) -> None:
    r = vhost.publish_nowait(Message.build("amq.direct", "none", b"x"))
    assert not r.routed and vhost.unroutable == 1
    assert not vhost.publish_nowait(Message.build("", "no-such-queue", b"x")).routed
    with pytest.raises(NotFoundError):
        vhost.publish_nowait(Message.build("missing", "k", b"x"))
    await vhost.declare_exchange("int", "fanout", internal=True)
    with pytest.raises(AccessRefusedError):
        vhost.publish_nowait(Message.build("int", "k", b"x"))
    await vhost.declare_queue("q")
    with pytest.raises(AccessRefusedError):
        await vhost.bind_queue("q", "", "q")


async def test_exchange_to_exchange_and_alternate(vhost: VirtualHost) -> None:
    await vhost.declare_exchange("ae", "fanout")
    await vhost.declare_exchange("front", "topic", arguments={"alternate-exchange": "ae"})
    await vhost.declare_exchange("back", "direct")
    await vhost.bind_exchange("back", "front", "orders.#")
    await vhost.bind_exchange("front", "back", "loop")  # a cycle must not loop forever
    for q in ["orders", "unrouted"]:
        await vhost.declare_queue(q)
    await vhost.bind_queue("orders", "back", "orders.new")
    await vhost.bind_queue("unrouted", "ae", "")
    vhost.publish_nowait(Message.build("front", "orders.new", b"o1"))
    vhost.publish_nowait(Message.build("front", "misc", b"m1"))
    assert drain(vhost, "orders") == [b"o1"]
    assert drain(vhost, "unrouted") == [b"m1"]
    await vhost.unbind_exchange("back", "front", "orders.#")
    vhost.publish_nowait(Message.build("front", "orders.new", b"o2"))
    assert drain(vhost, "orders") == [] and drain(vhost, "unrouted") == [b"o2"]


async def test_delayed_messages_survive_reopen(open_registry: Opener, clock: VirtualClock) -> None:
    reg = await open_registry()
    v = reg["/"]
    await v.declare_exchange("delay", "x-delayed-message", arguments={"x-delayed-type": "direct"})
    await v.declare_queue("q", durable=True)
    await v.bind_queue("q", "delay", "k")
    r1 = await v.publish(
        Message.build("delay", "k", b"later", headers={"x-delay": 5000, "a": 1}, persistent=True)
    )
    r2 = await v.publish(
        Message.build("delay", "k", b"sooner", headers={"x-delay": 1000}, persistent=True)
    )
    await v.publish(Message.build("delay", "k", b"now", persistent=True))
    assert r1.routed and r2.routed
    assert drain(v, "q") == [b"now"]
    clock.advance(1000)
    await reg.tick()
    assert drain(v, "q") == [b"sooner"]
    reg = await open_registry()
    v = reg["/"]
    assert v.next_deadline() == clock.now_ms() + 4000
    clock.advance(3999)
    await reg.tick()
    assert drain(v, "q") == []
    clock.advance(1)
    await reg.tick()
    q = v.queues["q"]
    got = q.basic_get(no_ack=True)
    assert got is not None and got.message.body == b"later"
    assert got.message.headers == {"a": 1}  # x-delay removed
    reg = await open_registry()
    clock.advance(10_000)
    await reg.tick()
    assert drain(reg["/"], "q") == []  # released once only
