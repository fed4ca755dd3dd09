"""A queue's logs: batched appends, durability of confirmed batches, bodies read back, memory."""

from __future__ import annotations

import asyncio
import errno
import gc
import os
import tracemalloc
from pathlib import Path

import pytest
from queue_helpers import Opener

from helpers.log_gate import gate_log_opens
from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.queues.message import Message
from wharf.core.queues.registry import VhostRegistry
from wharf.core.queues.store import open_store
from wharf.core.queues.vhost import dir_name
from wharf.errors import PreconditionError, StorageError
from wharf.storage.checkpoint import write_checkpoint
from wharf.storage.loader import RECOVERY_POINT_FILE
from wharf.storage.log import Log
from wharf.testing.clock import VirtualClock


def persistent(body: bytes) -> Message:
    return Message.build("", "d", body, persistent=True, content_type="application/octet-stream")


def bodies(n: int, size: int) -> list[bytes]:
    return [i.to_bytes(4, "big") + os.urandom(size - 4) for i in range(n)]


async def test_one_iteration_of_publishes_is_one_batch_and_survives_reopen(
    open_registry: Opener,
) -> None:
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS))
    v = reg["/"]
    q = await v.declare_queue("d", durable=True)
    sent = bodies(500, 100)
    results = [v.publish_nowait(persistent(b)) for b in sent]
    assert q.store.batches_written == 0  # nothing written inside the iteration
    for result in results:
        await result.wait_durable()  # every confirm: fsynced
    assert q.store.batches_written == 1
    assert q.store.messages.durable_offset >= q.store.next_offset
    # a later iteration is a later batch, after the first one
    more = bodies(3, 50)
    for b in more:
        v.publish_nowait(persistent(b))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    assert q.store.batches_written == 2
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS))
    q = reg["/"].queues["d"]
    got = [q.basic_get(no_ack=True) for _ in range(503)]
    assert [d.message.body for d in got if d] == sent + more
    assert all(d is not None and not d.redelivered for d in got)


async def test_confirm_of_a_pending_publish_writes_its_batch(open_registry: Opener) -> None:
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS))
    v = reg["/"]
    q = await v.declare_queue("d", durable=True)
    result = v.publish_nowait(persistent(b"now"))
    await result.wait_durable()  # without waiting for the end of the iteration
    assert q.store.messages.durable_offset == q.store.next_offset == 1


async def test_bodies_beyond_the_budget_are_read_back_byte_exact(open_registry: Opener) -> None:
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.NEVER, queue_resident_bytes=10_000))
    v = reg["/"]
    q = await v.declare_queue("d", durable=True, arguments={"x-max-priority": 5})
    sent = bodies(300, 1000)
    for i, b in enumerate(sent):
        v.publish_nowait(
            Message.build("", "d", b, persistent=True, priority=i % 2, message_id=str(i))
        )
    assert q.resident_bytes <= 10_000 and q.message_bytes == 300_000
    # browsing and delivery read what the log holds: priority 1 first, FIFO within
    order = [b for i, b in enumerate(sent) if i % 2] + [b for i, b in enumerate(sent) if not i % 2]
    assert [e.message.body for e in q.peek(300)] == order
    first = q.basic_get(no_ack=False)
    assert first is not None and first.message.body == order[0]
    assert first.message.headers == {} and first.message.priority == 1
    q.reject([first.delivery_id], requeue=True)
    again = q.basic_get(no_ack=False)
    assert again is not None and again.redelivered and again.message.body == order[0]
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.NEVER))
    q = reg["/"].queues["d"]
    assert q.resident_bytes == 0 and q.message_count == 300
    got = [q.basic_get(no_ack=True) for _ in range(300)]
    assert [d.message.body for d in got if d] == order
    assert got[0] is not None and got[0].redelivered
    props = [d.message.properties for d in got if d]
    assert (
        props[0]
        == Message.build("", "d", b"", persistent=True, priority=1, message_id="1").properties
    )


async def test_expired_and_dead_lettered_bodies_are_read_back(open_registry: Opener) -> None:
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.NEVER, queue_resident_bytes=0))
    v = reg["/"]
    await v.declare_queue("dead", durable=True)
    q = await v.declare_queue(
        "d",
        durable=True,
        arguments={
            "x-dead-letter-exchange": "",
            "x-max-length": 2,
            "x-dead-letter-routing-key": "dead",
        },
    )
    for b in (b"one", b"two", b"three"):
        v.publish_nowait(persistent(b))
    assert q.resident_bytes == 0 and q.message_count == 2
    dead = v.queues["dead"].basic_get(no_ack=True)
    assert dead is not None and dead.message.body == b"one"
    assert dead.message.headers["x-death"][0]["reason"] == "maxlen"


async def test_deep_queue_keeps_only_its_index_in_memory(open_registry: Opener) -> None:
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.NEVER, queue_resident_bytes=1 << 20))
    v = reg["/"]
    q = await v.declare_queue("d", durable=True)
    n, size = 10_000, 2_000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for start in range(0, n, 100):
            for i in range(start, start + 100):
                v.publish_nowait(persistent(i.to_bytes(4, "big") + b"b" * (size - 4)))
            await asyncio.sleep(0)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert q.message_count == n and q.message_bytes == n * size
    assert q.resident_bytes <= 1 << 20
    # 20 MB of bodies; what stays is the index (a few hundred bytes a message) and the budget
    assert grown < n * size // 3, grown
    got = [q.basic_get(no_ack=True) for _ in range(n)]
    assert [int.from_bytes(d.message.body[:4], "big") for d in got if d] == list(range(n))


async def test_transient_queue_keeps_bodies(open_registry: Opener) -> None:
    reg = await open_registry(BrokerConfig(queue_resident_bytes=0))  # only for queues on disk
    v = reg["/"]
    q = await v.declare_queue("d", durable=False)
    sent = bodies(100, 100)
    for b in sent:
        v.publish_nowait(persistent(b))
    assert q.resident_bytes == q.message_bytes == 100 * 100
    got = [q.basic_get(no_ack=True) for _ in range(100)]
    assert [d.message.body for d in got if d] == sent


async def test_a_failed_batch_write_nacks_its_confirms_and_is_written_later(
    open_registry: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS))
    v = reg["/"]
    q = await v.declare_queue("d", durable=True)
    await v.publish_nowait(persistent(b"m0")).wait_durable()  # makes the queue's logs
    log = q.store.messages
    real_append = log.append

    def disk_full(batches: bytes | bytearray | memoryview) -> object:
        raise StorageError("No space left on device", errno=errno.ENOSPC)

    monkeypatch.setattr(log, "append", disk_full)  # fault injection: the disk is full
    results = [v.publish_nowait(persistent(b"m%d" % i)) for i in range(1, 4)]
    for result in results:
        with pytest.raises(StorageError):
            await result.wait_durable()  # nack: not stored
    assert log.next_offset == 1 and q.message_count == 4
    monkeypatch.setattr(log, "append", real_append)  # space is back
    last = v.publish_nowait(persistent(b"m4"))
    await last.wait_durable()
    assert log.next_offset == 5 and q.store.batches_written == 2
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS))
    q = reg["/"].queues["d"]
    got = [q.basic_get(no_ack=True) for _ in range(5)]
    assert [d.message.body for d in got if d] == [b"m0", b"m1", b"m2", b"m3", b"m4"]


def _queue_dir(reg: VhostRegistry, name: str) -> Path:
    return reg["/"].path / "queues" / dir_name(name)


async def test_a_durable_queue_has_no_files_until_its_first_message(
    open_registry: Opener,
) -> None:
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS))
    q = await reg["/"].declare_queue("d", durable=True)
    assert q.store.durable and not _queue_dir(reg, "d").exists()
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS))  # a restart
    v = reg["/"]
    q = v.queues["d"]
    assert q.durable and q.message_count == 0 and not _queue_dir(reg, "d").exists()
    await v.publish_nowait(persistent(b"first")).wait_durable()
    assert (_queue_dir(reg, "d") / "messages").is_dir()
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS))
    got = reg["/"].queues["d"].basic_get(no_ack=True)
    assert got is not None and got.message.body == b"first"


async def test_messages_of_a_queue_whose_logs_are_being_made_are_read_from_memory(
    open_registry: Opener,
) -> None:
    # no body kept in memory with its entry: each delivery reads the message back
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS, queue_resident_bytes=0))
    v = reg["/"]
    q = await v.declare_queue("d", durable=True)
    sent = bodies(3, 64)
    results = [v.publish_nowait(persistent(b)) for b in sent]
    first = q.basic_get(no_ack=False)  # in the same iteration: nothing is on disk yet
    assert first is not None and first.message.body == sent[0]
    q.reject([first.delivery_id], requeue=True)
    again = [q.basic_get(no_ack=True) for _ in range(3)]
    assert [d.message.body for d in again if d] == sent
    assert again[0] is not None and again[0].redelivered
    for result in results:
        await result.wait_durable()


async def test_a_queue_deleted_while_its_logs_are_being_made_leaves_no_files(
    open_registry: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS))
    v = reg["/"]
    await v.declare_queue("d", durable=True)
    started, gate = gate_log_opens(monkeypatch)
    confirm = v.publish_nowait(persistent(b"m"))
    waiting = asyncio.ensure_future(confirm.wait_durable())
    while not started.is_set():  # the first write is making the logs
        await asyncio.sleep(0.001)
    deleting = asyncio.ensure_future(v.delete_queue("d"))
    await asyncio.sleep(0.01)
    gate.set()
    await deleting
    await waiting  # the message went with its queue: the confirm does not wait for it
    assert not _queue_dir(reg, "d").exists()
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS))
    assert "d" not in reg["/"].queues


async def test_a_queue_whose_logs_cannot_be_made_nacks_its_confirms_and_makes_them_later(
    open_registry: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS))
    v = reg["/"]
    q = await v.declare_queue("d", durable=True)
    real_open = Log.open

    def disk_full(cls: type[Log], *args: object, **kwargs: object) -> Log:
        raise StorageError("No space left on device", errno=errno.ENOSPC)

    monkeypatch.setattr(Log, "open", classmethod(disk_full))  # fault injection
    results = [v.publish_nowait(persistent(b"m%d" % i)) for i in range(3)]
    for result in results:
        with pytest.raises(StorageError):
            await result.wait_durable()  # nack: not stored
    assert q.message_count == 3
    monkeypatch.setattr(Log, "open", real_open)  # space is back
    await v.publish_nowait(persistent(b"m3")).wait_durable()
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS))
    q = reg["/"].queues["d"]
    got = [q.basic_get(no_ack=True) for _ in range(4)]
    assert [d.message.body for d in got if d] == [b"m0", b"m1", b"m2", b"m3"]


@pytest.mark.parametrize("way", ["at-open", "at-first-use", "in-the-background"])
async def test_settlements_of_a_lost_message_log_tail_do_not_hit_new_messages(
    tmp_path: Path, way: str
) -> None:
    config, clock = BrokerConfig(fsync=FsyncPolicy.NEVER), VirtualClock()
    store = await open_store(tmp_path, config, clock)
    for i in range(3):
        store.append(i, persistent(b"old"), None, 0, keep=True)
    store.settle([0, 1, 2])
    store.delivered([0, 1])
    await store.close()
    # A crash where the message log's tail never reached the disk but the state log's did:
    # the message log comes back empty.
    messages_dir = tmp_path / "messages"
    for segment in messages_dir.glob("*.log"):
        os.truncate(segment, 0)
    write_checkpoint(str(messages_dir / RECOVERY_POINT_FILE), 0)
    if way == "at-first-use":  # a queue a crash left unread, used before the background
        store = await open_store(tmp_path, config, clock, new=True)
        assert store.recover_now() == [] and store.next_offset == 0
    elif way == "in-the-background":  # read back and closed again on the pool
        store = await open_store(tmp_path, config, clock, new=True)
        read = store.read_back_closed()
        assert read.live == [] and read.summary.next_offset == 0
        store.take_read_back(read.summary)
        assert store.cold and store.next_offset == 0
    else:
        store = await open_store(tmp_path, config, clock)
        assert await store.recover() == [] and store.next_offset == 0
    assert store.append(0, persistent(b"new"), None, 0, keep=True) == 0  # offset 0 again
    await store.close()
    for _ in range(2):  # the stale state must not come back on any later open either
        store = await open_store(tmp_path, config, clock)
        live = await store.recover()
        await store.close()
        assert [(m.offset, m.delivery_count) for m in live] == [(0, 0)]
        assert live[0].message is not None and live[0].message.body == b"new"


async def test_large_messages_are_stored_alone_and_oversized_ones_refused(
    open_registry: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS))
    v = reg["/"]
    q = await v.declare_queue("d", durable=True)
    big = os.urandom(3 << 20)  # larger than a storage batch's default limit
    results = [v.publish_nowait(persistent(b)) for b in (b"small", big, b"after")]
    for result in results:
        await result.wait_durable()
    monkeypatch.setattr("wharf.core.queues.store.MAX_MESSAGE_BYTES", 1000)
    with pytest.raises(PreconditionError):
        v.publish_nowait(persistent(b"x" * 1001))
    assert q.message_count == 3
    reg = await open_registry(BrokerConfig(fsync=FsyncPolicy.ALWAYS))
    q = reg["/"].queues["d"]
    got = [q.basic_get(no_ack=True) for _ in range(3)]
    assert [d.message.body for d in got if d] == [b"small", big, b"after"]
