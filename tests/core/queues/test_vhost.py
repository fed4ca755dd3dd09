"""Exchanges, bindings, routing across exchanges, delayed messages, definitions and users."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from queue_helpers import Opener

from wharf.core.broker import Broker
from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.queues.exchanges import UnknownExchangeTypeError
from wharf.core.queues.message import Message
from wharf.core.queues.queue import Queue
from wharf.core.queues.registry import VhostRegistry
from wharf.core.queues.vhost import VirtualHost
from wharf.core.users import Access, Permission
from wharf.errors import AccessRefusedError, NotFoundError, PreconditionError
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


async def test_exchange_declare_rules(vhost: VirtualHost) -> None:
    ex = await vhost.declare_exchange("e", "direct")
    assert await vhost.declare_exchange("e", "direct") is ex
    with pytest.raises(PreconditionError):
        await vhost.declare_exchange("e", "topic")
    with pytest.raises(PreconditionError):
        await vhost.declare_exchange("e", "direct", durable=False)
    with pytest.raises(PreconditionError):
        await vhost.declare_exchange("e", "direct", arguments={"alternate-exchange": "x"})
    with pytest.raises(NotFoundError):
        await vhost.declare_exchange("nope", "direct", passive=True)
    assert await vhost.declare_exchange("e", "whatever", passive=True) is ex
    with pytest.raises(AccessRefusedError):
        await vhost.declare_exchange("amq.mine", "direct")
    with pytest.raises(UnknownExchangeTypeError):
        await vhost.declare_exchange("odd", "x-unknown")
    with pytest.raises(PreconditionError):
        await vhost.declare_exchange("d", "x-delayed-message")  # no x-delayed-type
    await vhost.declare_queue("q")
    await vhost.bind_queue("q", "e", "k")
    with pytest.raises(PreconditionError):
        await vhost.delete_exchange("e", if_unused=True)
    await vhost.delete_exchange("e")
    assert "e" not in vhost.exchanges and not list(vhost.bindings())


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


async def test_auto_delete_exchange(vhost: VirtualHost) -> None:
    await vhost.declare_exchange("tmp", "fanout", auto_delete=True)
    await vhost.declare_queue("q")
    await vhost.bind_queue("q", "tmp", "")
    await vhost.unbind_queue("q", "tmp", "")
    await vhost.close()  # waits for the deletion task
    assert "tmp" not in vhost.exchanges


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


async def test_definitions_restore(open_registry: Opener) -> None:
    reg = await open_registry()
    v = reg["/"]
    await v.declare_exchange("d-ex", "headers", arguments={"alternate-exchange": "amq.fanout"})
    await v.declare_exchange("t-ex", "fanout", durable=False)
    await v.declare_queue("dq", durable=True, arguments={"x-max-priority": 4, "x-message-ttl": 9})
    await v.declare_queue("tq")
    await v.bind_queue("dq", "d-ex", "", {"x-match": "any", "k": "v", "n": 3})
    await v.bind_queue("tq", "d-ex", "")
    await v.bind_exchange("d-ex", "amq.topic", "a.#")
    other = await reg.create("other")
    await other.declare_queue("oq", durable=True)
    reg.users.add_user("alice", "s3cret", tags=["management"])
    reg.users.set_permissions("alice", "other", Permission(".*", "^oq$", ""))
    reg.save()
    reg = await open_registry()
    v = reg["/"]
    assert set(v.exchanges) >= {"d-ex"} and "t-ex" not in v.exchanges
    assert v.exchanges["d-ex"].alternate_exchange == "amq.fanout"
    assert set(v.queues) == {"dq"}
    assert v.queues["dq"].args.max_priority == 4
    bindings = {(b.source, b.destination, b.routing_key) for b in v.bindings()}
    assert bindings == {("d-ex", "dq", ""), ("amq.topic", "d-ex", "a.#")}
    vq = v.queues["dq"]
    v.publish_nowait(Message.build("amq.topic", "a.b", b"m", headers={"k": "v"}))
    assert vq.message_count == 1
    assert "oq" in reg["other"].queues
    reg.users.authenticate("alice", "s3cret")
    reg.users.check("alice", "other", Access.WRITE, "oq")
    with pytest.raises(AccessRefusedError):
        reg.users.check("alice", "other", Access.READ, "oq")
    await reg.delete("other")
    assert "other" not in reg
    with pytest.raises(NotFoundError):
        reg["other"]


async def test_users_and_passwords(open_registry: Opener, tmp_path: Path) -> None:
    reg = await open_registry()
    users = reg.users
    assert users.authenticate("guest", "guest").name == "guest"
    with pytest.raises(AccessRefusedError):
        users.authenticate("guest", "wrong")
    with pytest.raises(AccessRefusedError):
        users.authenticate("guest", "guest", loopback=False)
    with pytest.raises(AccessRefusedError):
        users.authenticate("nobody", "x")
    users.check("guest", "/", Access.CONFIGURE, "anything")
    with pytest.raises(AccessRefusedError):
        users.check("guest", "other", Access.READ, "q")
    users.add_user("bob", "hunter2-plain")
    assert users.authenticate("bob", "hunter2-plain").name == "bob"
    reg.save()
    text = (tmp_path / "q" / "definitions.json").read_text()
    assert '"bob"' in text and "hunter2-plain" not in text
    reg = await open_registry()
    assert reg.users.authenticate("bob", "hunter2-plain").name == "bob"
    reg.users.delete_user("bob")
    with pytest.raises(AccessRefusedError):
        reg.users.authenticate("bob", "hunter2-plain")


async def test_broker_exposes_vhosts(tmp_path: Path) -> None:
    async with Broker.open(tmp_path / "b", BrokerConfig(fsync=FsyncPolicy.NEVER)) as broker:
        q = await broker.vhosts["/"].declare_queue("x", durable=True)
        await broker.vhosts["/"].publish(Message.build("", "x", b"1", persistent=True))
        assert q.message_count == 1
    async with Broker.open(tmp_path / "b", BrokerConfig(fsync=FsyncPolicy.NEVER)) as broker:
        assert broker.vhosts["/"].queues["x"].message_count == 1


async def test_background_timer_releases_and_expires(tmp_path: Path) -> None:
    async with Broker.open(tmp_path / "b", BrokerConfig(fsync=FsyncPolicy.NEVER)) as broker:
        v = broker.vhosts["/"]
        await v.declare_exchange(
            "delay", "x-delayed-message", arguments={"x-delayed-type": "fanout"}
        )
        out = await v.declare_queue("out")
        await v.bind_queue("out", "delay", "")
        short = await v.declare_queue("short", arguments={"x-message-ttl": 30})
        await v.publish(Message.build("delay", "", b"d", headers={"x-delay": 30}))
        await v.publish(Message.build("", "short", b"s"))
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while (out.message_count == 0 or short.message_count) and loop.time() < deadline:
            await asyncio.sleep(0.01)
        assert out.message_count == 1 and short.message_count == 0 and short.expired == 1


class CrashCopies:
    """Opens what a crash right now would leave of a registry's directory (its files as they
    are, pending writes of the running one not flushed), to look, then close."""

    def __init__(self, source: Path, clock: VirtualClock) -> None:
        self.source = source
        self.clock = clock
        self.taken = 0

    async def open(self) -> VhostRegistry:
        self.taken += 1
        copy = self.source.parent / f"crash-{self.taken}"
        shutil.copytree(self.source, copy)
        (copy / "wharf.lock").unlink(missing_ok=True)
        return await VhostRegistry.open(copy, BrokerConfig(), self.clock, start_timer=False)


def gate_durability(queue: Queue, opened_at_end: list[asyncio.Event]) -> asyncio.Event:
    """Hold every wait for ``queue``'s copies to reach disk until the returned event is set
    (``opened_at_end``: the test's gates, which its teardown opens)."""
    gate = asyncio.Event()
    opened_at_end.append(gate)
    wait = queue.wait_durable

    async def gated(offset: int) -> None:
        await gate.wait()
        await wait(offset)

    queue.wait_durable = gated  # type: ignore[method-assign]
    return gate


T = TypeVar("T")


@pytest.fixture
async def gates() -> AsyncIterator[list[asyncio.Event]]:
    """Gates made by gate_durability; opened when the test ends, before the registry
    closes (closing waits for the tasks that wait behind them)."""
    made: list[asyncio.Event] = []
    yield made
    for gate in made:
        gate.set()


async def eventually(probe: Callable[[], Awaitable[T]], wanted: T, timeout: float = 10) -> T:
    """What ``probe`` returns once it returns ``wanted``, or its last answer after
    ``timeout`` seconds (the durability waits run on a committer thread)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        got = await probe()
        if got == wanted or asyncio.get_running_loop().time() > deadline:
            return got
        await asyncio.sleep(0.02)


async def run_loop_a_while() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def work_queue_with_poison(v: VirtualHost) -> Queue:
    """Durable queue ``work`` (dead letters to durable ``dlq``) holding one durable message."""
    await v.declare_queue("dlq", durable=True)
    source = await v.declare_queue(
        "work",
        durable=True,
        arguments={"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "dlq"},
    )
    await v.publish(Message.build("", "work", b"poison", persistent=True))
    return source


async def test_dead_lettered_message_leaves_its_queue_once_its_copy_is_durable(
    open_registry: Opener, clock: VirtualClock, tmp_path: Path, gates: list[asyncio.Event]
) -> None:
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS))
    v = reg["/"]
    source = await work_queue_with_poison(v)
    gate = gate_durability(v.queues["dlq"], gates)
    delivery = source.basic_get(no_ack=False)
    assert delivery is not None
    source.reject([delivery.delivery_id], requeue=False)
    await run_loop_a_while()
    crashes = CrashCopies(tmp_path / "q", clock)

    # Before the copy in dlq is on disk, a crash leaves the message in its source queue.
    crashed = await crashes.open()
    try:
        assert drain(crashed["/"], "work") == [b"poison"]
    finally:
        await crashed.close()

    gate.set()

    async def after_crash() -> tuple[list[bytes], list[bytes]]:
        crashed = await crashes.open()
        try:
            return drain(crashed["/"], "work"), drain(crashed["/"], "dlq")
        finally:
            await crashed.close()

    assert await eventually(after_crash, ([], [b"poison"])) == ([], [b"poison"])


async def test_released_delayed_message_is_settled_once_its_copy_is_durable(
    open_registry: Opener, clock: VirtualClock, tmp_path: Path, gates: list[asyncio.Event]
) -> None:
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS))
    v = reg["/"]
    await v.declare_exchange("delay", "x-delayed-message", arguments={"x-delayed-type": "direct"})
    await v.declare_queue("q", durable=True)
    await v.bind_queue("q", "delay", "k")
    await v.publish(Message.build("delay", "k", b"later", headers={"x-delay": 1000},
                                  persistent=True))
    gate = gate_durability(v.queues["q"], gates)
    clock.advance(1000)
    await reg.tick()
    await run_loop_a_while()
    crashes = CrashCopies(tmp_path / "q", clock)

    # Before the copy in q is on disk, a crash leaves the message held by the exchange.
    crashed = await crashes.open()
    try:
        assert len(crashed["/"].delayed["delay"]) == 1
    finally:
        await crashed.close()

    gate.set()

    async def after_crash() -> list[bytes]:
        crashed = await crashes.open()
        try:
            await crashed.tick()
            return drain(crashed["/"], "q")
        finally:
            await crashed.close()

    # once: the copy, not a second release
    assert await eventually(after_crash, [b"later"]) == [b"later"]


async def test_maintenance_keeps_a_dead_lettered_record_until_it_is_settled(
    open_registry: Opener, clock: VirtualClock, tmp_path: Path, gates: list[asyncio.Event]
) -> None:
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS, queue_segment_bytes=4096))
    v = reg["/"]
    source = await work_queue_with_poison(v)
    first = source.basic_get(no_ack=False)
    assert first is not None
    for i in range(200):  # segments after the poison message's, then all settled
        await v.publish(Message.build("", "work", b"%03d" % i + b"x" * 200, persistent=True))
    source.ack(d.delivery_id for d in iter(lambda: source.basic_get(no_ack=False), None))
    gate_durability(v.queues["dlq"], gates)
    source.reject([first.delivery_id], requeue=False)
    await run_loop_a_while()
    await v.maintain()  # may free every segment before the first record still needed

    crashed = await CrashCopies(tmp_path / "q", clock).open()
    try:
        assert drain(crashed["/"], "work") == [b"poison"]
    finally:
        await crashed.close()
