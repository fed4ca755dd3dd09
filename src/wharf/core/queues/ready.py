"""The ready messages of a queue, in delivery order: priority first, then FIFO.

How it works: the heap holds plain ints, not entries: a message's sequence number, with
``(MAX_PRIORITY_CAP - priority)`` from bit 64 on when the queue has priorities. The smallest
key is the highest priority's oldest message, a returned message goes back to its original
place (its sequence number never changes), and plain ints keep the heap small and its
comparisons cheap. The entries themselves live in the queue's ``seq -> entry`` table, which the
heap shares. It also keeps the figures overflow and expiry need without walking it: the body
bytes of ready messages and how many of them have an expiry time.
"""

from __future__ import annotations

import heapq

from wharf.core.queues.args import MAX_PRIORITY_CAP
from wharf.core.queues.entry import QueueEntry

__all__ = ["ReadyHeap"]

_SEQ_MASK = (1 << 64) - 1


class ReadyHeap:
    """The ready entries of one queue (``entries``: the queue's live entries by sequence)."""

    __slots__ = ("_entries", "_prioritised", "bytes", "expiring", "keys")

    def __init__(self, entries: dict[int, QueueEntry], *, prioritised: bool) -> None:
        self._entries = entries
        # The heap itself; read-only outside this class. Hot paths test ``keys`` for
        # emptiness (a plain list) rather than the heap (a Python-level __bool__ call).
        self.keys: list[int] = []
        self._prioritised = prioritised
        self.bytes = 0  # body bytes of ready entries
        self.expiring = 0  # ready entries with an expiry time

    def __len__(self) -> int:
        return len(self.keys)

    def __bool__(self) -> bool:
        return bool(self.keys)

    def push(self, entry: QueueEntry) -> None:
        key = entry.seq
        if self._prioritised:
            key |= (MAX_PRIORITY_CAP - entry.priority) << 64
        heapq.heappush(self.keys, key)
        self.bytes += entry.size
        if entry.expires_at is not None:
            self.expiring += 1

    def pop(self) -> QueueEntry:
        """Take the head; the heap must not be empty."""
        entry = self._entries[heapq.heappop(self.keys) & _SEQ_MASK]
        self.bytes -= entry.size
        if entry.expires_at is not None:
            self.expiring -= 1
        return entry

    def head(self) -> QueueEntry:
        """The next entry to deliver, left in place; the heap must not be empty."""
        return self._entries[self.keys[0] & _SEQ_MASK]

    def head_seq(self) -> int:
        return self.keys[0] & _SEQ_MASK

    def peek(self, count: int) -> list[QueueEntry]:
        """The next ``count`` entries in delivery order, left in place."""
        entries = self._entries
        return [entries[key & _SEQ_MASK] for key in heapq.nsmallest(count, self.keys)]

    def clear(self) -> None:
        self.keys.clear()
        self.bytes = 0
        self.expiring = 0
