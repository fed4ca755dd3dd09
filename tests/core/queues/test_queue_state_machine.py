"""Queue semantics checked against a plain in-memory model by a hypothesis state machine.

The real queue runs on real logs in a temporary directory with a manual clock; the model is a
list of messages with priorities, expiry times and delivery counts. Rules publish, get, ack,
reject (with and without requeue), lose a consumer holding messages, advance time, drain the
dead-letter queue and restart the whole registry from disk. After every step the ready and
unacked counts must agree; every delivery must be the message the model predicts, with the
predicted redelivered flag and delivery count. The same rules run again with a resident-body
budget of a few bytes, so that most bodies are read back from the log.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from queue_helpers import RecordingConsumer

from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.queues.consumers import Delivery
from wharf.core.queues.message import Message
from wharf.core.queues.queue import Queue
from wharf.core.queues.registry import VhostRegistry
from wharf.core.users import UserStore
from wharf.testing.clock import VirtualClock

T = TypeVar("T")
MAX_PRIORITY = 3


@dataclass
class ModelMessage:
    seq: int
    body: bytes
    priority: int
    expires_at: int | None
    deliveries: int = 0


class QueueMachine(RuleBasedStateMachine):
    resident = BrokerConfig().queue_resident_bytes  # body bytes a queue keeps in memory

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="wharf-qsm-"))
        self.clock = VirtualClock()
        self.registry: VhostRegistry | None = None
        self.queue: Queue
        self.dlq: Queue
        self.ready: list[ModelMessage] = []
        self.unacked: dict[int, tuple[ModelMessage, Delivery]] = {}
        self.dead: list[tuple[bytes, str]] = []
        self.next_seq = 0
        self.open()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def open(self) -> None:
        async def opening() -> VhostRegistry:
            config = BrokerConfig(fsync=FsyncPolicy.NEVER, queue_resident_bytes=self.resident)
            reg = await VhostRegistry.open(
                self.dir, config, self.clock, UserStore.with_defaults(), start_timer=False
            )
            v = reg["/"]
            await v.declare_queue("dlq", durable=True)
            await v.declare_queue(
                "q",
                durable=True,
                arguments={
                    "x-max-priority": MAX_PRIORITY,
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": "dlq",
                },
            )
            return reg

        self.registry = self.run(opening())
        self.queue = self.registry["/"].queues["q"]
        self.dlq = self.registry["/"].queues["dlq"]

    def teardown(self) -> None:
        if self.registry is not None:
            self.run(self.registry.close())
        self.loop.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ----------------------------------------------------------------------- model helpers

    def _expire_head(self) -> None:
        now = self.clock.now_ms()
        while self.ready:
            head = min(self.ready, key=lambda m: (-m.priority, m.seq))
            if head.expires_at is None or head.expires_at > now:
                return
            self.ready.remove(head)
            self.dead.append((head.body, "expired"))

    def _take_head(self) -> ModelMessage | None:
        self._expire_head()
        if not self.ready:
            return None
        head = min(self.ready, key=lambda m: (-m.priority, m.seq))
        self.ready.remove(head)
        head.deliveries += 1
        return head

    def _check_delivery(self, expected: ModelMessage, delivery: Delivery) -> None:
        assert delivery.message.body == expected.body
        assert delivery.delivery_count == expected.deliveries
        assert delivery.redelivered == (expected.deliveries > 1)

    # ------------------------------------------------------------------------------ rules

    @rule(
        priority=st.integers(0, MAX_PRIORITY + 2),
        ttl=st.one_of(st.none(), st.integers(0, 300)),
    )
    def publish(self, priority: int, ttl: int | None) -> None:
        body = b"m%d" % self.next_seq
        self._expire_head()
        now = self.clock.now_ms()
        self.ready.append(
            ModelMessage(
                self.next_seq,
                body,
                min(priority, MAX_PRIORITY),
                None if ttl is None else now + ttl,
            )
        )
        self.next_seq += 1
        self._expire_head()
        assert self.registry is not None
        message = Message.build(
            "", "q", body, persistent=True, priority=priority, expiration_ms=ttl
        )
        result = self.run(self.registry["/"].publish(message))
        assert result.routed and not result.rejected

    @rule()
    def get(self) -> None:
        expected = self._take_head()
        delivery = self.queue.basic_get(no_ack=False)
        if expected is None:
            assert delivery is None
            return
        assert delivery is not None
        self._check_delivery(expected, delivery)
        self.unacked[delivery.delivery_id] = (expected, delivery)

    @precondition(lambda self: self.unacked)
    @rule(data=st.data())
    def ack(self, data: st.DataObject) -> None:
        delivery_id = data.draw(st.sampled_from(sorted(self.unacked)))
        self.unacked.pop(delivery_id)
        self.queue.ack([delivery_id])

    @precondition(lambda self: self.unacked)
    @rule(data=st.data(), requeue=st.booleans())
    def reject(self, data: st.DataObject, requeue: bool) -> None:
        delivery_id = data.draw(st.sampled_from(sorted(self.unacked)))
        model, _ = self.unacked.pop(delivery_id)
        if requeue:
            self.ready.append(model)
        else:
            self.dead.append((model.body, "rejected"))
        self.queue.reject([delivery_id], requeue=requeue)

    @rule(prefetch=st.integers(1, 3))
    def consumer_takes_then_dies(self, prefetch: int) -> None:
        consumer = RecordingConsumer("c", prefetch=prefetch)
        expected = []
        for _ in range(prefetch):
            m = self._take_head()
            if m is None:
                break
            expected.append(m)
        self.queue.add_consumer(consumer)
        assert len(consumer.deliveries) == len(expected)
        for m, d in zip(expected, consumer.deliveries, strict=True):
            self._check_delivery(m, d)
        self.queue.remove_consumer(consumer)  # connection lost: everything comes back
        self.ready.extend(expected)

    @rule(ms=st.integers(1, 200))
    def advance_time(self, ms: int) -> None:
        self.clock.advance(ms)
        self._expire_head()
        assert self.registry is not None
        self.run(self.registry.tick())

    @rule()
    def drain_dead_letters(self) -> None:
        got = []
        while (d := self.dlq.basic_get(no_ack=True)) is not None:
            got.append((d.message.body, d.message.headers["x-death"][0]["reason"]))
        assert got == self.dead
        self.dead.clear()

    @rule()
    def maintain(self) -> None:
        assert self.registry is not None
        self.run(self.registry.maintain())

    @rule()
    def restart(self) -> None:
        assert self.registry is not None
        self.run(self.registry.close())
        self.registry = None
        for model, _ in self.unacked.values():
            self.ready.append(model)  # unacked come back, their delivery count kept
        self.unacked.clear()
        self.open()

    @invariant()
    def counts_agree(self) -> None:
        assert self.queue.message_count == len(self.ready)
        assert self.queue.unacked_count == len(self.unacked)
        assert self.dlq.message_count == len(self.dead)


QueueMachine.TestCase.settings = settings(
    max_examples=50,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestQueueMachine = QueueMachine.TestCase


class PagedQueueMachine(QueueMachine):
    """The same rules with room for about two bodies in memory: the rest come from the log."""

    resident = 8


PagedQueueMachine.TestCase.settings = settings(
    max_examples=25,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPagedQueueMachine = PagedQueueMachine.TestCase
