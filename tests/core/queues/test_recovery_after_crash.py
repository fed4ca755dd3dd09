"""Durable queues after a crash: the restart adds them without reading their logs and reads
them back in the background; whatever uses a queue before that reads that queue back first,
so every message, its order and its delivery count are there as if all had been read at
start."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest
from queue_helpers import Opener, RecordingConsumer, fill, persistent, take_all

from helpers.log_gate import watch_log_opens
from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.queues.registry import SUMMARIES, VhostRegistry
from wharf.errors import StorageError


@pytest.fixture
def registry_config() -> BrokerConfig:
    return BrokerConfig(fsync=FsyncPolicy.ALWAYS)


async def crashed(
    open_registry: Opener,
    tmp_path: Path,
    queues: dict[str, int],
    config: BrokerConfig | None = None,
) -> VhostRegistry:
    """A registry opened again after a crash, its queues holding ``queues`` messages each
    (the first message of the first queue delivered once and never acknowledged)."""
    reg = await open_registry(config)
    for name, count in queues.items():
        await fill(reg["/"], name, count)
    first = next(iter(queues))
    assert reg["/"].queues[first].basic_get(no_ack=False) is not None
    await reg.close()
    (tmp_path / "q" / SUMMARIES).unlink()  # as after kill -9: no summary of the logs
    return await open_registry(config)


async def recovered_in_background(reg: VhostRegistry) -> None:
    for _ in range(1000):
        if not reg.recovering:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the queues were not read back within 10 s")


async def test_the_restart_reads_no_queue_log_and_the_background_reads_them_all(
    open_registry: Opener, tmp_path: Path
) -> None:
    reg = await crashed(open_registry, tmp_path, {"a": 3, "b": 2, "c": 0})
    vhost = reg["/"]
    a, b = vhost.queues["a"], vhost.queues["b"]
    assert a.recovering and b.recovering and reg.recovering
    assert not vhost.queues["c"].recovering  # never held a message: no log to read
    assert reg.open_queue_logs == 0 and vhost.unrecovered == 2
    await recovered_in_background(reg)
    assert not a.recovering and not b.recovering and vhost.unrecovered == 0
    assert take_all(a) == [(b"a-0", True, 2), (b"a-1", False, 1), (b"a-2", False, 1)]
    assert take_all(b) == [(b"b-0", False, 1), (b"b-1", False, 1)]


async def test_the_background_keeps_to_the_bound_on_open_queue_logs(
    open_registry: Opener, tmp_path: Path
) -> None:
    config = BrokerConfig(fsync=FsyncPolicy.ALWAYS, open_queue_logs=2)
    queues = {f"q{i}": 2 for i in range(12)}
    reg = await crashed(open_registry, tmp_path, queues, config)
    most = 0
    while reg.recovering:
        most = max(most, reg.open_queue_logs)
        await asyncio.sleep(0)
    for _ in range(3):  # the last evictions (each pass spares the queues used since the last)
        await reg.maintain()
        evicting = reg._evicting
        if evicting is not None:
            await evicting
    assert most == 0 and reg.open_queue_logs == 0  # each job closes the logs it read
    for name in queues:
        expected = [(b"%s-%d" % (name.encode(), i), False, 1) for i in range(2)]
        if name == "q0":
            expected[0] = (b"q0-0", True, 2)
        assert take_all(reg["/"].queues[name]) == expected


async def test_a_publish_into_a_queue_not_read_back_yet_goes_after_its_messages(
    open_registry: Opener, tmp_path: Path
) -> None:
    reg = await crashed(open_registry, tmp_path, {"a": 3})
    vhost = reg["/"]
    a = vhost.queues["a"]
    assert a.recovering
    result = vhost.publish_nowait(persistent("a", b"a-3"))  # reads the queue back at once
    assert not a.recovering and a.message_count == 4
    await result.wait_durable()
    await reg.close()
    (tmp_path / "q" / SUMMARIES).unlink()
    reg = await open_registry()
    assert take_all(reg["/"].queues["a"]) == [
        (b"a-0", True, 2), (b"a-1", False, 1), (b"a-2", False, 1), (b"a-3", False, 1)
    ]  # fmt: skip


async def test_counts_gets_and_consumers_of_a_queue_not_read_back_yet(
    open_registry: Opener, tmp_path: Path
) -> None:
    reg = await crashed(open_registry, tmp_path, {"a": 3, "b": 2, "c": 2, "d": 2})
    vhost = reg["/"]
    a, b, c, d = (vhost.queues[n] for n in "abcd")
    assert all(q.recovering for q in (a, b, c, d))
    assert (await vhost.declare_queue("a", passive=True)).message_count == 3
    assert (await vhost.declare_queue("b", durable=True)).message_count == 2
    assert c.awaits_first
    got = await c.fetch(no_ack=True)
    assert got is not None and got.message.body == b"c-0"
    consumer = RecordingConsumer()
    await d.admit(consumer)
    d.add_consumer(consumer)
    assert [x.message.body for x in consumer.deliveries] == [b"d-0", b"d-1"]
    assert not any(q.recovering for q in (a, b, c, d))


async def test_purging_or_deleting_a_queue_not_read_back_yet_counts_its_messages(
    open_registry: Opener, tmp_path: Path
) -> None:
    reg = await crashed(open_registry, tmp_path, {"a": 3, "b": 2})
    vhost = reg["/"]
    path = vhost.queues["b"].store.path
    assert path is not None and path.exists()
    assert await vhost.purge_queue("a") == 3
    assert await vhost.delete_queue("b") == 2
    assert not path.exists()
    await recovered_in_background(reg)
    reg = await open_registry()
    assert list(reg["/"].queues) == ["a"] and reg["/"].queues["a"].message_count == 0


async def test_a_use_takes_the_place_of_a_reading_not_begun_and_waits_for_one_under_way(
    open_registry: Opener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = await crashed(open_registry, tmp_path, {"a": 3, "b": 2})
    vhost = reg["/"]
    a, b = vhost.queues["a"], vhost.queues["b"]
    not_begun = a.begin_recovery()
    assert not_begun is not None
    assert a.message_count == 3  # before the pool ran it: read here instead
    assert not_begun.cancelled()
    a.recover_into(not_begun)  # (nothing to do)
    a.end_recovery(not_begun)

    overlapped = watch_log_opens(monkeypatch)
    under_way = b.begin_recovery()
    assert under_way is not None
    worker = threading.Thread(target=b.recover_into, args=(under_way,))
    worker.start()
    while not under_way.running() and not under_way.done():
        time.sleep(0.001)
    assert b.message_count == 2  # under way: its end waited for, and its result taken
    worker.join()
    assert overlapped == [] and b.store.cold  # read and closed by the pool's job alone
    b.end_recovery(under_way)
    assert take_all(b) == [(b"b-0", False, 1), (b"b-1", False, 1)]


async def test_a_clean_stop_before_the_background_is_done_keeps_every_message(
    open_registry: Opener, tmp_path: Path
) -> None:
    queues = {f"q{i}": 2 for i in range(20)}
    reg = await crashed(open_registry, tmp_path, queues)
    assert reg.recovering
    await reg.close()  # stops the background reading; what is unread has no summary
    reg = await open_registry()
    for name in queues:
        expected = [(b"%s-%d" % (name.encode(), i), False, 1) for i in range(2)]
        if name == "q0":
            expected[0] = (b"q0-0", True, 2)
        assert take_all(reg["/"].queues[name]) == expected


async def test_a_queue_that_cannot_be_read_back_is_logged_and_the_others_are_read(
    open_registry: Opener, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    reg = await crashed(open_registry, tmp_path, {"a": 2, "b": 2})
    path = reg["/"].queues["a"].store.path
    assert path is not None
    await reg.close()
    (tmp_path / "q" / SUMMARIES).unlink()
    for item in (path / "state").iterdir():
        item.unlink()
    (path / "state").rmdir()
    (path / "state").write_bytes(b"")  # a file where the state log's directory should be
    reg = await open_registry()
    await recovered_in_background(reg)
    vhost = reg["/"]
    assert "cannot read back queue 'a' in vhost '/'" in caplog.text
    assert take_all(vhost.queues["b"]) == [(b"b-0", False, 1), (b"b-1", False, 1)]
    assert vhost.queues["a"].recovering  # tried again at its first use, which fails
    with pytest.raises(StorageError):
        vhost.publish_nowait(persistent("a", b"a-2"))
    assert vhost.queues["a"].recovering
