"""Topology: declaring and deleting exchanges and queues, and their rules."""

from __future__ import annotations

import asyncio
import threading

import pytest

from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.queues import definitions
from wharf.core.queues.exchanges import UnknownExchangeTypeError
from wharf.core.queues.message import Message
from wharf.core.queues.vhost import VirtualHost
from wharf.errors import (
    AccessRefusedError,
    NotFoundError,
    PreconditionError,
    ResourceLockedError,
)
from wharf.storage.journal import JournalFile


@pytest.fixture
def registry_config() -> BrokerConfig:
    return BrokerConfig(fsync=FsyncPolicy.NEVER)


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


async def test_auto_delete_exchange(vhost: VirtualHost) -> None:
    await vhost.declare_exchange("tmp", "fanout", auto_delete=True)
    await vhost.declare_queue("q")
    await vhost.bind_queue("q", "tmp", "")
    await vhost.unbind_queue("q", "tmp", "")
    await vhost.close()  # waits for the deletion task
    assert "tmp" not in vhost.exchanges


async def test_deleting_a_queue_or_exchange_drops_exactly_the_bindings_to_it(
    vhost: VirtualHost,
) -> None:
    await vhost.declare_exchange("tmp", "direct", auto_delete=True)
    await vhost.declare_exchange("keep", "direct")
    await vhost.declare_exchange("inner", "fanout")
    for queue in ("q", "other"):
        await vhost.declare_queue(queue)
    await vhost.bind_queue("q", "tmp", "a")
    await vhost.bind_queue("q", "keep", "a")
    await vhost.bind_queue("q", "keep", "b")
    await vhost.bind_queue("other", "keep", "a")
    await vhost.bind_queue("other", "inner", "")
    await vhost.bind_exchange("inner", "keep", "c")
    await vhost.unbind_queue("q", "keep", "b")
    await vhost.bind_queue("q", "keep", "b")  # bound again after an unbind
    await vhost.delete_queue("q")
    await vhost.close()  # waits for the auto-deletion task
    assert "tmp" not in vhost.exchanges  # its last binding went with the queue
    assert sorted((b.source, b.destination, b.routing_key) for b in vhost.bindings()) == [
        ("inner", "other", ""), ("keep", "inner", "c"), ("keep", "other", "a"),
    ]  # fmt: skip
    await vhost.delete_exchange("inner")
    assert [(b.source, b.destination) for b in vhost.bindings()] == [("keep", "other")]


def msg(body: bytes, key: str = "q", **kw: object) -> Message:
    return Message.build("", key, body, **kw)  # type: ignore[arg-type]


async def test_exclusive_queue_ownership(vhost: VirtualHost) -> None:
    await vhost.declare_queue("ex", exclusive=True, owner="conn1")
    with pytest.raises(ResourceLockedError):
        await vhost.declare_queue("ex", exclusive=True, owner="conn2")
    with pytest.raises(ResourceLockedError):
        vhost.get_queue("ex", owner="conn2")
    await vhost.connection_closed("conn1")
    assert "ex" not in vhost.queues


async def test_declare_rules(vhost: VirtualHost) -> None:
    named = await vhost.declare_queue("")
    assert named.name.startswith("amq.gen-")
    with pytest.raises(NotFoundError):
        await vhost.declare_queue("nope", passive=True)
    await vhost.declare_queue("q", arguments={"x-message-ttl": 5})
    with pytest.raises(PreconditionError):
        await vhost.declare_queue("q", arguments={"x-message-ttl": 6})
    with pytest.raises(PreconditionError):
        await vhost.declare_queue("q", durable=True, arguments={"x-message-ttl": 5})
    assert (await vhost.declare_queue("q", arguments={"x-message-ttl": 5, "other": 1})).name
    for bad in [
        {"x-message-ttl": -1},
        {"x-message-ttl": "5"},
        {"x-max-length": True},
        {"x-overflow": "sideways"},
        {"x-queue-type": "stream"},
        {"x-expires": 0},
        {"x-dead-letter-routing-key": "k"},
        {"x-single-active-consumer": 1},
    ]:
        with pytest.raises(PreconditionError):
            await vhost.declare_queue("bad", arguments=bad)
    with pytest.raises(PreconditionError):
        await vhost.declare_queue("qq", arguments={"x-queue-type": "quorum"})  # not durable
    with pytest.raises(AccessRefusedError):
        await vhost.declare_queue("amq.mine")
    q = vhost.queues["q"]
    vhost.publish_nowait(msg(b"1"))
    with pytest.raises(PreconditionError):
        await vhost.delete_queue("q", if_empty=True)
    assert await vhost.purge_queue("q") == 1
    assert await vhost.delete_queue("q", if_empty=True) == 0
    assert q.deleted


async def test_concurrent_declarations_of_a_durable_queue_open_it_once(
    vhost: VirtualHost,
) -> None:
    first, second = await asyncio.gather(
        vhost.declare_queue("same", durable=True), vhost.declare_queue("same", durable=True)
    )
    assert first is second and vhost.queues["same"] is first
    with pytest.raises(PreconditionError):  # the second one checked against the first
        await asyncio.gather(
            vhost.declare_queue("other", durable=True),
            vhost.declare_queue("other", durable=True, arguments={"x-max-priority": 3}),
        )
    assert vhost.queues["other"].args.max_priority is None


async def test_concurrent_declarations_of_a_durable_delayed_exchange_open_it_once(
    vhost: VirtualHost,
) -> None:
    args = {"x-delayed-type": "direct"}
    first, second = await asyncio.gather(
        vhost.declare_exchange("later", "x-delayed-message", arguments=args),
        vhost.declare_exchange("later", "x-delayed-message", arguments=args),
    )
    assert first is second and len(vhost.delayed) == 1


async def test_a_redeclaration_answers_only_once_the_first_declaration_is_saved(
    vhost: VirtualHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, gate = threading.Event(), threading.Event()
    real_sync = JournalFile.sync

    def gated_sync(journal: JournalFile) -> None:
        started.set()
        assert gate.wait(30)
        real_sync(journal)

    monkeypatch.setattr(JournalFile, "sync", gated_sync)
    first = asyncio.create_task(vhost.declare_queue("d", durable=True))
    while not started.is_set():
        await asyncio.sleep(0.001)
    again = asyncio.create_task(vhost.declare_queue("d", durable=True))
    exchange = asyncio.create_task(vhost.declare_exchange("e", "direct"))
    await asyncio.sleep(0.01)
    try:
        assert not first.done() and not again.done() and not exchange.done()
    finally:
        gate.set()
    assert await first is await again
    await exchange
    assert await vhost.declare_exchange("e", "direct") is exchange.result()


async def test_a_durable_queue_whose_declarer_went_away_while_it_was_saved_is_still_added(
    vhost: VirtualHost, monkeypatch: pytest.MonkeyPatch
) -> None:
    started, gate = asyncio.Event(), asyncio.Event()
    real_save = vhost._save

    async def gated_save() -> None:
        started.set()
        await gate.wait()
        await real_save()

    monkeypatch.setattr(vhost, "_save", gated_save)
    declaring = asyncio.create_task(vhost.declare_queue("d", durable=True))
    await started.wait()
    declaring.cancel()  # its connection was lost
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await declaring
    again = await vhost.declare_queue("d", durable=True)  # sees the first one's queue
    assert vhost.queues["d"] is again
    saved = definitions.load_definitions(vhost.path.parent.parent)
    assert saved is not None and [q["name"] for q in saved["queues"]] == ["d"]


async def test_an_inequivalent_redeclare_names_what_differs(vhost: VirtualHost) -> None:
    # As RabbitMQ does: the message says which property or argument differs, and how.
    await vhost.declare_queue("tasks", arguments={"x-max-priority": 10})
    with pytest.raises(PreconditionError) as priority:
        await vhost.declare_queue("tasks", durable=True)
    assert str(priority.value) == (
        "inequivalent arg 'durable' for queue 'tasks' in vhost '/': received true but current "
        "is false"
    )
    await vhost.declare_queue("jobs", durable=True, arguments={"x-max-priority": 10})
    with pytest.raises(PreconditionError) as missing:
        await vhost.declare_queue("jobs", durable=True)
    assert str(missing.value) == (
        "inequivalent arg 'x-max-priority' for queue 'jobs' in vhost '/': received none but "
        "current is 10"
    )
    with pytest.raises(PreconditionError) as other:
        await vhost.declare_queue("jobs", durable=True, arguments={"x-max-priority": 5})
    assert "'x-max-priority'" in str(other.value) and "received 5 but current is 10" in str(
        other.value
    )
