"""Log space reclamation: acked segments go, pinning records move to the tail (keeping their
delivery ids across the move and a restart), small live messages stay put."""

from __future__ import annotations

import os
from pathlib import Path

from queue_helpers import Opener

from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.queues.message import Message


def msg(body: bytes, key: str = "q", **kw: object) -> Message:
    return Message.build("", key, body, **kw)  # type: ignore[arg-type]


def _segment_files(path: Path) -> list[str]:
    return sorted(f for f in os.listdir(path) if f.endswith(".log"))


async def test_reclaims_acked_segments(open_registry: Opener, tmp_path: Path) -> None:
    cfg = BrokerConfig(fsync=FsyncPolicy.NEVER, queue_segment_bytes=4096)
    reg = await open_registry(cfg)
    v = reg["/"]
    q = await v.declare_queue("d", durable=True)
    for i in range(200):
        v.publish_nowait(msg(b"x" * 100 + b"%d" % i, key="d", persistent=True))
    await q.store.write_now()  # the queue's logs are made by its first write
    log_dir = Path(q.store.messages.path)  # type: ignore[attr-defined]
    before = len(_segment_files(log_dir))
    assert before > 3
    while (d := q.basic_get(no_ack=False)) is not None:
        q.ack([d.delivery_id])
    await reg.maintain()
    assert len(_segment_files(log_dir)) == 1
    assert q.store.messages.log_start_offset == q.store.messages.next_offset


async def test_reclaim_moves_a_pinning_message_to_the_tail(
    open_registry: Opener,
) -> None:
    cfg = BrokerConfig(fsync=FsyncPolicy.NEVER, queue_segment_bytes=4096)
    reg = await open_registry(cfg)
    v = reg["/"]
    q = await v.declare_queue("d", durable=True)
    v.publish_nowait(msg(b"old", key="d", persistent=True))
    pin = q.basic_get(no_ack=False)  # delivered, never acked: pins the first segment
    assert pin is not None
    for i in range(300):
        v.publish_nowait(msg(b"y" * 100 + b"%d" % i, key="d", persistent=True))
        d = q.basic_get(no_ack=False)
        assert d is not None
        q.ack([d.delivery_id])
    await q.store.write_now()
    log_dir = Path(q.store.messages.path)  # type: ignore[attr-defined]
    assert len(_segment_files(log_dir)) > 4
    await reg.maintain()
    await reg.maintain()
    assert len(_segment_files(log_dir)) <= 2
    q.ack([pin.delivery_id])  # the delivery id survived the move
    v.publish_nowait(msg(b"new", key="d", persistent=True))
    reg = await open_registry(cfg)
    q = reg["/"].queues["d"]
    got = q.basic_get(no_ack=True)
    assert got is not None and got.message.body == b"new" and q.message_count == 0


async def test_moved_unacked_message_is_redelivered_after_restart(open_registry: Opener) -> None:
    cfg = BrokerConfig(fsync=FsyncPolicy.NEVER, queue_segment_bytes=4096)
    reg = await open_registry(cfg)
    v = reg["/"]
    q = await v.declare_queue("d", durable=True)
    v.publish_nowait(msg(b"old", key="d", persistent=True))
    assert q.basic_get(no_ack=False) is not None
    for i in range(300):
        v.publish_nowait(msg(b"z" * 100 + b"%d" % i, key="d", persistent=True))
        d = q.basic_get(no_ack=False)
        assert d is not None
        q.ack([d.delivery_id])
    await reg.maintain()
    reg = await open_registry(cfg)
    q = reg["/"].queues["d"]
    got = q.basic_get(no_ack=True)
    assert got is not None and got.message.body == b"old" and got.redelivered
    assert q.basic_get(no_ack=True) is None


async def test_small_live_messages_are_not_moved(open_registry: Opener) -> None:
    # a full log of tiny live messages is not "pinned": nothing to gain by moving them
    cfg = BrokerConfig(fsync=FsyncPolicy.NEVER, queue_segment_bytes=4096)
    reg = await open_registry(cfg)
    v = reg["/"]
    q = await v.declare_queue("d", durable=True)
    for _ in range(300):
        v.publish_nowait(msg(b"t", key="d", persistent=True))
    end = q.store.next_offset
    await reg.maintain()
    assert q.store.next_offset == end and q.message_count == 300
