"""Dead-lettering: x-death headers, cycles, and the at-least-once move (the source record is
settled only once the copies are durable; a delayed exchange's release works the same way)."""

from __future__ import annotations

import asyncio
import datetime
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest
from queue_helpers import Opener

from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.queues.message import Message
from wharf.core.queues.queue import Queue
from wharf.core.queues.registry import VhostRegistry
from wharf.core.queues.store import QueueStore
from wharf.core.queues.vhost import VirtualHost
from wharf.core.users import UserStore
from wharf.testing.clock import VirtualClock


@pytest.fixture
def registry_config() -> BrokerConfig:
    return BrokerConfig(fsync=FsyncPolicy.NEVER)


def drain(vhost: VirtualHost, queue: str) -> list[bytes]:
    q = vhost.queues[queue]
    return [d.message.body for d in iter(lambda: q.basic_get(no_ack=True), None)]


def msg(body: bytes, key: str = "q", **kw: object) -> Message:
    return Message.build("", key, body, **kw)  # type: ignore[arg-type]


async def test_ttl_expiry_dead_letters_with_x_death(
    vhost: VirtualHost, clock: VirtualClock
) -> None:
    await vhost.declare_exchange("dlx", "fanout")
    dlq = await vhost.declare_queue("dlq")
    await vhost.bind_queue("dlq", "dlx", "")
    q = await vhost.declare_queue(
        "work", arguments={"x-message-ttl": 1000, "x-dead-letter-exchange": "dlx"}
    )
    vhost.publish_nowait(msg(b"old", key="work", headers={"k": "v"}))
    clock.advance(500)
    vhost.publish_nowait(msg(b"short", key="work", expiration_ms=100))
    clock.advance(600)
    assert q.next_deadline() == clock.now_ms() - 100
    await vhost.tick()  # "old" expired at the head; "short" (expired too) is head next
    assert q.message_count == 0 and q.expired == 2
    dead = [dlq.basic_get(no_ack=True) for _ in range(2)]
    assert [d.message.body for d in dead if d] == [b"old", b"short"]
    first = dead[0]
    assert first is not None
    h = first.message.headers
    assert h["k"] == "v"
    assert h["x-first-death-reason"] == "expired" and h["x-first-death-queue"] == "work"
    assert h["x-last-death-exchange"] == ""
    (entry,) = h["x-death"]
    assert entry["count"] == 1 and entry["reason"] == "expired" and entry["queue"] == "work"
    assert entry["exchange"] == "" and entry["routing-keys"] == ["work"]
    assert entry["time"] == datetime.datetime.fromtimestamp(clock.now_ms() // 1000, datetime.UTC)
    assert first.message.exchange == "dlx"
    second = dead[1]
    assert second is not None
    assert second.message.expiration_ms is None
    assert second.message.headers["x-death"][0]["original-expiration"] == "100"


async def test_x_death_count_grows_and_routing_key_override(vhost: VirtualHost) -> None:
    # work -> (reject) -> dlx -> retry queue with key "again" -> ... -> work
    await vhost.declare_exchange("dlx", "direct")
    work = await vhost.declare_queue(
        "work",
        arguments={"x-dead-letter-exchange": "dlx", "x-dead-letter-routing-key": "again"},
    )
    retry = await vhost.declare_queue("retry")
    await vhost.bind_queue("retry", "dlx", "again")
    vhost.publish_nowait(msg(b"m", key="work"))
    for _ in range(3):
        d = work.basic_get(no_ack=False)
        assert d is not None
        work.reject([d.delivery_id], requeue=False)
        back = retry.basic_get(no_ack=True)
        assert back is not None and back.message.routing_key == "again"
        vhost.publish_nowait(back.message.with_route("", "work"))
    final = work.basic_get(no_ack=True)
    assert final is not None
    deaths = final.message.headers["x-death"]
    assert len(deaths) == 1 and deaths[0]["count"] == 3 and deaths[0]["reason"] == "rejected"


async def test_dead_letter_cycle_is_dropped(vhost: VirtualHost, clock: VirtualClock) -> None:
    q = await vhost.declare_queue(
        "loop",
        arguments={"x-message-ttl": 10, "x-dead-letter-exchange": ""},
    )
    vhost.publish_nowait(msg(b"m", key="loop"))
    clock.advance(20)
    await vhost.tick()
    assert q.message_count == 0  # expired into itself: a cycle, dropped


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
        for attempt in range(1, 21):
            try:
                shutil.copytree(self.source, copy)
                break
            except shutil.Error:
                # A file went while it was copied (a log being made in the background renames
                # its checkpoints into place): the copy is no instant, so take another.
                shutil.rmtree(copy, ignore_errors=True)
                if attempt == 20:
                    raise
        return await VhostRegistry.open(
            copy, BrokerConfig(), self.clock, UserStore.with_defaults(), start_timer=False
        )


Gates = dict[QueueStore, asyncio.Event]


def gate_durability(queue: Queue, held: Gates) -> asyncio.Event:
    """Hold every wait for ``queue``'s copies to reach disk until the returned event is set
    (``held``: the test's gates, which its teardown opens)."""
    gate = held[queue.store] = asyncio.Event()
    return gate


T = TypeVar("T")


@pytest.fixture
async def gates(
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Gates]:
    """Gates made by gate_durability, by store; opened when the test ends, before the
    registry closes (closing waits for the tasks that wait behind them)."""
    held: Gates = {}
    wait = QueueStore.wait_durable

    async def gated(store: QueueStore, offset: int) -> None:
        gate = held.get(store)
        if gate is not None:
            await gate.wait()
        await wait(store, offset)

    monkeypatch.setattr(QueueStore, "wait_durable", gated)
    yield held
    for gate in held.values():
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
    open_registry: Opener, clock: VirtualClock, tmp_path: Path, gates: Gates
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
    open_registry: Opener, clock: VirtualClock, tmp_path: Path, gates: Gates
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
    open_registry: Opener, clock: VirtualClock, tmp_path: Path, gates: Gates
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
