"""The vhost registry: definitions (with the users given to it) saved and restored, the
broker's vhosts, the background timer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from queue_helpers import Opener

from wharf.core.broker import Broker
from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.queues.message import Message
from wharf.core.queues.registry import VhostRegistry
from wharf.core.users import Access, Permission, UserStore, hash_password
from wharf.errors import (
    AccessRefusedError,
    NotFoundError,
)
from wharf.storage.journal import read_journal
from wharf.testing.clock import VirtualClock


@pytest.fixture
def registry_config() -> BrokerConfig:
    return BrokerConfig(fsync=FsyncPolicy.NEVER)


async def test_definitions_restore(open_registry: Opener) -> None:
    users = UserStore.with_defaults()
    reg = await open_registry(users=users)
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
    users.put_user("alice", hash_password("s3cret"), tags=["management"])
    users.set_permissions("alice", "other", Permission(".*", "^oq$", ""))
    await reg.save()
    users = UserStore.with_defaults()
    reg = await open_registry(users=users)
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
    users.authenticate("alice", "s3cret")
    users.check("alice", "other", Access.WRITE, "oq")
    with pytest.raises(AccessRefusedError):
        users.check("alice", "other", Access.READ, "oq")
    await reg.delete("other")
    assert "other" not in reg
    assert not users.can_access_vhost("alice", "other")
    with pytest.raises(NotFoundError):
        reg["other"]


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


async def test_a_queue_with_a_nearer_deadline_wakes_the_timer_and_a_later_one_does_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Waking asks every queue for its deadline: a declare must not do it for nothing.
    clock = VirtualClock()
    config = BrokerConfig(fsync=FsyncPolicy.NEVER)
    registry = await VhostRegistry.open(tmp_path, config, clock, UserStore.with_defaults())
    try:
        vhost = registry["/"]
        woken: list[int] = []
        wake = registry._timer.wake

        def counted_wake() -> None:
            woken.append(clock.now_ms())
            wake()

        monkeypatch.setattr(registry._timer, "wake", counted_wake)
        await vhost.declare_queue("later", arguments={"x-expires": 600_000})
        await vhost.declare_queue("plain")
        assert woken == []  # the timer runs within a second anyway
        await vhost.declare_queue("soon", arguments={"x-expires": 200})
        assert len(woken) == 1
        await clock.run_for(199)
        assert "soon" in vhost.queues
        await clock.run_for(1)  # at its deadline, not at the next one-second tick
        assert "soon" not in vhost.queues and "later" in vhost.queues
    finally:
        await registry.close()


async def test_a_restart_journals_nothing_it_restores(
    open_registry: Opener, tmp_path: Path
) -> None:
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS))
    v = reg["/"]
    await v.declare_exchange("ex", "direct", durable=True)
    for name in ("empty", "full"):
        await v.declare_queue(name, durable=True)
        await v.bind_queue(name, "ex", name)
    await v.publish_nowait(Message.build("ex", "full", b"m", persistent=True)).wait_durable()

    def journal_records() -> list[bytes]:
        return [
            record
            for path in (tmp_path / "q").glob("definitions.*.journal")
            for record in read_journal(path)
        ]

    before = journal_records()
    assert before
    for _ in range(2):
        reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS))
    assert journal_records() == before
    v = reg["/"]
    assert not v.restoring
    assert sorted(v.queues) == ["empty", "full"] and v.queues["full"].message_count == 1
    assert sorted(b.routing_key for b in v.exchanges["ex"].bindings) == ["empty", "full"]
