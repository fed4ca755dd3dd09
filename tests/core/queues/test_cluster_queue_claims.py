"""The claim loop of a cluster queue against a scripted claim engine: which claims it sends,
and that a notification is never lost while one is in flight. (The loop against the real
database is in test_cluster_queues.py; here the order of events is the test's.)"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from queue_helpers import RecordingConsumer

from wharf.cluster.queues.messages import ClaimedMessage
from wharf.core.config import BrokerConfig
from wharf.core.queues import cluster_queue as cluster_queue_module
from wharf.core.queues.args import parse_queue_args
from wharf.core.queues.cluster_queue import ClusterQueue
from wharf.testing.clock import VirtualClock

BOUND_S = 10.0
EPOCH = 7
NO_PROPERTIES = b"\x00\x00"  # a property list with no flags set


class ScriptedEngine:
    """The database side of a node's queues, as a list of ready rows: a claim takes rows
    from the head, then runs ``after_snapshot[n]`` (n: its number, from 1) as if something
    committed right after its statement read the table."""

    def __init__(self) -> None:
        self.rows: list[int] = []
        self.claims: list[tuple[int, int]] = []  # (asked, got)
        self.after_snapshot: dict[int, Callable[[], None]] = {}
        self.body_size: int | None = None  # None: each body is its seq in digits
        self._tasks: set[asyncio.Task[None]] = set()

    def epoch(self) -> int | None:
        return EPOCH

    async def claim(
        self, queue_id: int, count: int, token: int, *, dead_letters: bool = False,
        consumer: int | None = None,
    ) -> list[ClaimedMessage]:  # fmt: skip
        taken, self.rows = self.rows[:count], self.rows[count:]
        self.claims.append((count, len(taken)))
        hook = self.after_snapshot.get(len(self.claims))
        if hook is not None:
            hook()
        await asyncio.sleep(0)
        return [
            ClaimedMessage(seq, 0, None, 0, "", "q", NO_PROPERTIES, self._body(seq), EPOCH)
            for seq in taken
        ]

    def _body(self, seq: int) -> bytes:
        return b"%d" % seq if self.body_size is None else bytes(self.body_size)

    def spawn(self, body: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(body)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def register_consumer(self, queue_id: int, tag: str, *, exclusive: bool) -> Any:
        raise AssertionError("not used here")

    def deregister_consumer(self, epoch: int, consumer_id: int) -> None:
        pass

    async def touch(self, queue_id: int) -> None:
        pass

    def delete(self, epoch: int, seqs: list[int]) -> None:
        pass

    def dead_letter(self, epoch: int, seqs: list[int], reason: str) -> None:
        pass

    def release(self, epoch: int, seqs: list[int], *, delivered: bool) -> None:
        pass


class NoHooks:
    def dead_letter(self, *args: object) -> None:
        raise AssertionError("nothing is dead-lettered here")

    def queue_unused(self, queue: object) -> None:
        pass


def cluster_queue(engine: ScriptedEngine) -> ClusterQueue:
    clock = VirtualClock()
    return ClusterQueue(
        "/", "q", 1, durable=True, auto_delete=False, exclusive_owner=None, arguments={},
        args=parse_queue_args({}), config=BrokerConfig(), clock=clock, hooks=NoHooks(),
        engine=engine,
    )  # fmt: skip


async def test_a_message_notified_while_a_claim_sent_ahead_is_in_flight_is_claimed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full claim of 10 sends the next one (5) before handing its rows out; that one's
    statement reads the table just before a publish commits, whose notification arrives
    while it is in flight. The loop must claim again: nothing else would wake the queue
    until the next timer tick (none runs here)."""
    engine = ScriptedEngine()
    engine.rows = list(range(1, 11))
    queue = cluster_queue(engine)
    wants = iter([10, 5, 5, 0])
    monkeypatch.setattr(queue, "_wanted", lambda coming=0: next(wants, 0))

    def publish_commits() -> None:
        engine.rows.append(11)
        queue.wake()  # the notification of the publish

    engine.after_snapshot[2] = publish_commits  # the claim sent ahead
    consumer = RecordingConsumer()
    queue.add_consumer(consumer)  # claims 10
    async with asyncio.timeout(BOUND_S):
        while len(consumer.deliveries) < 11:
            await asyncio.sleep(0.01)
    assert consumer.bodies() == [b"%d" % i for i in range(1, 12)]
    assert engine.claims == [(10, 10), (5, 0), (5, 1)]


async def settle_claims() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_a_queue_found_empty_is_claimed_again_only_when_woken() -> None:
    """A claim that finds fewer rows than it asked for means the queue had no more: the
    dispatches that acks set off do not claim again (each would be a round trip to the
    database for nothing); a notification or the timer tick does."""
    engine = ScriptedEngine()
    engine.rows = [1, 2]
    queue = cluster_queue(engine)
    consumer = RecordingConsumer()
    queue.add_consumer(consumer)
    async with asyncio.timeout(BOUND_S):
        while len(consumer.deliveries) < 2:
            await asyncio.sleep(0.01)
    await settle_claims()
    claims = len(engine.claims)
    assert engine.claims[-1][1] < engine.claims[-1][0]
    for _ in range(3):
        queue.dispatch()  # as an ack does
    await settle_claims()
    assert len(engine.claims) == claims
    engine.rows.append(3)
    queue.wake()
    await settle_claims()
    assert len(engine.claims) == claims + 1
    assert consumer.bodies() == [b"1", b"2", b"3"]
    engine.rows.append(4)
    queue.tick(0)
    await settle_claims()
    assert consumer.bodies() == [b"1", b"2", b"3", b"4"]


class WindowConsumer(RecordingConsumer):
    """A consumer with a prefetch window that tells its credit, as a channel's does."""

    def credit(self) -> int:
        return self.prefetch - len(self.outstanding)


async def test_large_messages_are_claimed_ahead_by_bytes_not_only_by_count(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A consumer holding 100 unacknowledged messages gets a read-ahead of 8 x 100 rows when
    they are small; of 64 KiB rows, only what fits in READ_AHEAD_BYTES (1 MiB here: 16)."""
    monkeypatch.setattr(cluster_queue_module, "READ_AHEAD_BYTES", 1 << 20)
    engine = ScriptedEngine()
    engine.rows = list(range(1, 2001))
    engine.body_size = 64 << 10
    queue = cluster_queue(engine)
    consumer = WindowConsumer(prefetch=100)
    queue.add_consumer(consumer)
    async with asyncio.timeout(BOUND_S):
        while len(consumer.deliveries) < 100:
            await asyncio.sleep(0.01)
    await settle_claims()
    assert sum(got for _, got in engine.claims) == 100 + 16
