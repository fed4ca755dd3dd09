"""Durable queues whose logs are closed: restored from a clean stop's summary without opening
a log, closed when idle beyond the bound on open queue logs, and opened again by whatever
needs their records, with every message, order and delivery count kept."""

from __future__ import annotations

import asyncio
import gc
import weakref
from pathlib import Path

import pytest
from queue_helpers import Opener, RecordingConsumer, fill, persistent, take_all

from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.queues.queue import Queue
from wharf.core.queues.registry import SUMMARIES


@pytest.fixture
def registry_config() -> BrokerConfig:
    return BrokerConfig(fsync=FsyncPolicy.ALWAYS)


def summaries_path(tmp_path: Path) -> Path:
    return tmp_path / "q" / SUMMARIES


async def test_a_clean_restart_restores_queues_without_opening_their_logs(
    open_registry: Opener, tmp_path: Path
) -> None:
    reg = await open_registry()
    await fill(reg["/"], "a", 3)
    await fill(reg["/"], "b", 2)
    a = reg["/"].queues["a"]
    first = a.basic_get(no_ack=False)
    assert first is not None and first.message.body == b"a-0"  # delivered, never acked
    reg = await open_registry()
    assert not summaries_path(tmp_path).exists()  # read and deleted at open
    a, b = reg["/"].queues["a"], reg["/"].queues["b"]
    assert a.store.cold and b.store.cold and reg.open_queue_logs == 0
    assert (a.message_count, b.message_count) == (3, 2)
    assert a.message_bytes == 9 and a.store.size_bytes > 0
    assert take_all(a) == [(b"a-0", True, 2), (b"a-1", False, 1), (b"a-2", False, 1)]
    assert not a.store.cold and reg.open_queue_logs == 1
    assert b.store.cold  # untouched: still closed


async def test_a_queue_restored_from_a_summary_writes_on_where_its_log_ended(
    open_registry: Opener, tmp_path: Path
) -> None:
    reg = await open_registry()
    await fill(reg["/"], "a", 3)
    reg = await open_registry()
    a = reg["/"].queues["a"]
    assert a.basic_get(no_ack=True) is not None  # a-0 gone: opens the logs
    await reg["/"].publish(persistent("a", b"a-3"))
    await reg.close()
    summaries_path(tmp_path).unlink()  # as after a crash: the logs are replayed
    reg = await open_registry()
    assert take_all(reg["/"].queues["a"]) == [(b"a-1", False, 1), (b"a-2", False, 1),
                                              (b"a-3", False, 1)]  # fmt: skip


async def test_a_publish_into_a_closed_queue_opens_it_on_the_pool_and_is_delivered_in_order(
    open_registry: Opener,
) -> None:
    reg = await open_registry()
    await fill(reg["/"], "a", 2)
    reg = await open_registry()
    vhost = reg["/"]
    a = vhost.queues["a"]
    result = vhost.publish_nowait(persistent("a", b"a-2"))
    assert a.store.cold  # the open is under way, the new record waits in memory
    await result.wait_durable()
    assert not a.store.cold
    assert take_all(a) == [(b"a-0", False, 1), (b"a-1", False, 1), (b"a-2", False, 1)]


async def test_a_read_that_cannot_wait_takes_the_open_under_way(open_registry: Opener) -> None:
    reg = await open_registry()
    await fill(reg["/"], "a", 2)
    reg = await open_registry()
    vhost = reg["/"]
    a = vhost.queues["a"]
    opened: list[Queue] = []
    vhost.queue_loaded = opened.append
    result = vhost.publish_nowait(persistent("a", b"a-2"))
    for _ in range(100):  # until the open runs on the pool
        if a.store._open_job is not None:
            break
        await asyncio.sleep(0)
    assert a.store._open_job is not None
    delivery = a.basic_get(no_ack=True)  # synchronous: waits for that open, opens nothing
    assert delivery is not None and delivery.message.body == b"a-0"
    await result.wait_durable()
    await asyncio.sleep(0.01)
    assert opened == [a]
    assert take_all(a) == [(b"a-1", False, 1), (b"a-2", False, 1)]


async def test_a_consumer_of_a_closed_queue_gets_every_message(open_registry: Opener) -> None:
    reg = await open_registry()
    await fill(reg["/"], "a", 3)
    reg = await open_registry()
    a = reg["/"].queues["a"]
    consumer = RecordingConsumer(prefetch=2)
    await a.admit(consumer)  # opens the logs first
    assert not a.store.cold
    a.add_consumer(consumer)
    assert [d.message.body for d in consumer.deliveries] == [b"a-0", b"a-1"]
    consumer.ack_all()
    assert [d.message.body for d in consumer.deliveries] == [b"a-0", b"a-1", b"a-2"]


async def test_idle_queue_logs_are_closed_beyond_the_bound_and_lose_nothing(
    open_registry: Opener, tmp_path: Path
) -> None:
    config = BrokerConfig(fsync=FsyncPolicy.ALWAYS, open_queue_logs=2)
    reg = await open_registry(config)
    vhost = reg["/"]
    for q in range(6):
        await fill(vhost, f"q{q}", 2)
    for _ in range(3):  # each pass spares the queues used since the one before
        await reg.maintain()
        evicting = reg._evicting
        if evicting is not None:
            await evicting
    assert reg.open_queue_logs <= 2
    closed = [q for q in range(6) if vhost.queues[f"q{q}"].store.cold]
    assert len(closed) >= 4
    assert take_all(vhost.queues[f"q{closed[0]}"]) == [
        (f"q{closed[0]}-{i}".encode(), False, 1) for i in range(2)
    ]
    await vhost.publish(persistent(f"q{closed[1]}", b"late"))
    await reg.close()
    summaries_path(tmp_path).unlink()  # as after a crash: the logs are replayed
    reg = await open_registry(config)
    for q in range(6):
        expected = [(f"q{q}-{i}".encode(), False, 1) for i in range(2)]
        if q == closed[0]:
            expected = []
        elif q == closed[1]:
            expected.append((b"late", False, 1))
        assert take_all(reg["/"].queues[f"q{q}"]) == expected


async def test_a_queue_busy_while_its_logs_close_opens_them_again_after_the_close(
    open_registry: Opener, tmp_path: Path
) -> None:
    reg = await open_registry()
    vhost = reg["/"]
    await fill(vhost, "a", 2)
    a = vhost.queues["a"]
    closing = asyncio.ensure_future(a.store.unload())
    await asyncio.sleep(0)  # the close runs on the pool
    assert a.store.cold
    await vhost.publish(persistent("a", b"a-2"))  # opens after the close, then writes
    assert await closing
    assert take_all(a) == [(b"a-0", False, 1), (b"a-1", False, 1), (b"a-2", False, 1)]
    await reg.close()
    summaries_path(tmp_path).unlink()
    reg = await open_registry()
    assert take_all(reg["/"].queues["a"]) == []


async def test_deleting_a_closed_queue_removes_its_logs(
    open_registry: Opener, tmp_path: Path
) -> None:
    reg = await open_registry()
    await fill(reg["/"], "a", 2)
    queues_dir = reg["/"].path / "queues"
    assert len(list(queues_dir.iterdir())) == 1
    reg = await open_registry()
    assert reg["/"].queues["a"].store.cold
    assert await reg["/"].delete_queue("a") == 2
    assert list(queues_dir.iterdir()) == []
    await reg["/"].declare_queue("a", durable=True)
    assert reg["/"].queues["a"].message_count == 0


async def test_an_unreadable_summary_is_ignored_and_the_logs_replayed(
    open_registry: Opener, tmp_path: Path
) -> None:
    reg = await open_registry()
    await fill(reg["/"], "a", 2)
    await reg.close()
    summaries_path(tmp_path).write_bytes(b"{not json")
    reg = await open_registry()
    assert not summaries_path(tmp_path).exists()
    a = reg["/"].queues["a"]
    assert not a.store.cold
    assert take_all(a) == [(b"a-0", False, 1), (b"a-1", False, 1)]


async def test_a_summary_of_a_queue_deeper_than_the_limit_is_not_saved(
    open_registry: Opener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("wharf.core.queues.vhost._MAX_SUMMARY_ENTRIES", 2)
    reg = await open_registry()
    await fill(reg["/"], "deep", 3)
    await fill(reg["/"], "shallow", 2)
    reg = await open_registry()
    assert not reg["/"].queues["deep"].store.cold  # recovered from its logs
    assert reg["/"].queues["shallow"].store.cold
    assert [b for b, _, _ in take_all(reg["/"].queues["deep"])] == [b"deep-0", b"deep-1",
                                                                     b"deep-2"]  # fmt: skip



async def test_a_deleted_queue_is_freed_without_the_cycle_collector(
    open_registry: Opener,
) -> None:
    reg = await open_registry()
    await fill(reg["/"], "a", 2)
    gone = weakref.ref(reg["/"].queues["a"])
    gc.disable()  # as after a restart, when the restored queues are frozen
    try:
        await reg["/"].delete_queue("a")
        await asyncio.sleep(0)
        assert gone() is None
    finally:
        gc.enable()


@pytest.mark.parametrize("crash", [False, True])
async def test_publishes_into_closed_queues_at_close_are_all_kept(
    open_registry: Opener, tmp_path: Path, crash: bool
) -> None:
    config = BrokerConfig(fsync=FsyncPolicy.ALWAYS, open_queue_logs=1)
    reg = await open_registry(config)
    vhost = reg["/"]
    for q in range(4):
        await fill(vhost, f"q{q}", 1)
    for q in range(4):
        await vhost.queues[f"q{q}"].store.unload()
    for q in range(4):  # each opens its logs while the registry closes: no eviction then
        vhost.publish_nowait(persistent(f"q{q}", b"late"))
    await reg.close()
    if crash:
        summaries_path(tmp_path).unlink()
    reg = await open_registry(config)
    for q in range(4):
        assert take_all(reg["/"].queues[f"q{q}"]) == [(f"q{q}-0".encode(), False, 1),
                                                      (b"late", False, 1)]  # fmt: skip
