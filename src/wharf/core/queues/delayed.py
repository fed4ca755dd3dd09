"""Messages held by an x-delayed-message exchange until their x-delay is over.

How it works: each delayed exchange keeps its held messages in a queue store of its own (the
same two-log layout as a queue, see :mod:`wharf.core.queues.store`, with the due time in the
record's expiry field), so they survive a restart when the exchange is durable and the message
persistent. In memory they sit in a heap by (due time, sequence). The virtual host's timer calls
:meth:`DelayedMessages.take_due` and routes what comes out as if it had just been published,
without the ``x-delay`` header.
"""

from __future__ import annotations

import heapq
from typing import Any

from wharf.core.queues.message import Message
from wharf.core.queues.store import QueueStore

__all__ = ["DelayedMessages", "delay_of"]


def delay_of(message: Message) -> int:
    """The x-delay header in ms (0 when absent, not an integer, or not positive)."""
    if not message.has_headers:
        return 0
    value: Any = message.headers.get("x-delay")
    if isinstance(value, bool) or not isinstance(value, int):
        return 0
    return max(value, 0)


class DelayedMessages:
    """The held messages of one delayed exchange."""

    def __init__(self, store: QueueStore, *, durable: bool) -> None:
        self.store = store
        self.durable = durable
        self.removed = False  # the exchange was deleted (its store with it)
        self._heap: list[tuple[int, int, int, Message]] = []  # (due, seq, offset, message)
        # Released but not settled yet (see take_due): offset -> seq.
        self._releasing: dict[int, int] = {}

    async def restore(self) -> None:
        """Hold again what the store recovered (a durable exchange reopened)."""
        for item in await self.store.recover():
            assert item.message is not None  # recover keeps bodies unless told not to
            due = item.expires_at or 0
            heapq.heappush(self._heap, (due, item.seq, item.offset, item.message))

    def __len__(self) -> int:
        return len(self._heap)

    def hold(self, message: Message, due_ms: int, now_ms: int) -> int | None:
        """Keep ``message`` until ``due_ms``; returns the offset to wait on for durability."""
        seq = self.store.next_offset  # the offset of its record: never reused
        keep = self.durable and message.persistent
        offset = self.store.append(seq, message, due_ms, now_ms, keep=keep)
        heapq.heappush(self._heap, (due_ms, seq, offset, message))
        return offset if keep else None

    def next_due(self) -> int | None:
        return self._heap[0][0] if self._heap else None

    def take_due(self, now_ms: int) -> list[tuple[int, Message]]:
        """Remove and return the messages due by ``now_ms``, in order, as (offset of their
        record, message without x-delay). Their records stay until :meth:`settle`."""
        out: list[tuple[int, Message]] = []
        while self._heap and self._heap[0][0] <= now_ms:
            _, seq, offset, message = heapq.heappop(self._heap)
            self._releasing[offset] = seq
            out.append((offset, message.with_headers({}, remove=["x-delay"])))
        return out

    def settle(self, offsets: list[int]) -> None:
        """Record that the released messages at ``offsets`` are delivered (see take_due);
        nothing once the exchange is gone."""
        for offset in offsets:
            self._releasing.pop(offset, None)
        if not self.removed:
            self.store.settle(offsets)

    async def maintain(self) -> None:
        held = [(offset, seq) for _, seq, offset, _ in self._heap]
        held += self._releasing.items()
        first = min((offset for offset, _ in held), default=None)
        log = self.store.messages
        self.store.reclaim(log.next_offset if first is None else first)
        if self.store.needs_snapshot(len(held)):
            await self.store.snapshot([(offset, seq, 0) for offset, seq in held])
