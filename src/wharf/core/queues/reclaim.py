"""Where a queue's live records are in its message log, and how their space is reclaimed.

How it works: the message log can only drop whole segments from its start, so the start may
advance to the oldest record still needed: the oldest live one, or an older dead-lettered one
whose copies are not on disk yet (*settling*: not live, but kept until the virtual host settles
it). A heap of live offsets, cleaned lazily of settled or moved records, finds the oldest live
record without a scan. When a few old records pin much more dead space (the log holds more than
two segments and over three times as many dead bytes as live ones), the oldest live records (at
most :data:`MOVE_BATCH` per pass) are appended again at the tail, keeping their sequence number,
so the segments they pinned can go. A moved record's offset no longer equals its sequence
number: ``moved`` maps such offsets back to their entry.
"""

from __future__ import annotations

import heapq

from wharf.core.clock import Clock
from wharf.core.queues.entry import QueueEntry
from wharf.core.queues.store import QueueStore

__all__ = ["MOVE_BATCH", "Reclaimer"]

# Move at most this many pinning records to the tail per maintenance pass.
MOVE_BATCH = 1000

# What ``settling`` is while nothing settles (shared, never changed: hold() replaces it).
_NONE_SETTLING: dict[int, tuple[int, int]] = {}


class Reclaimer:
    """Space bookkeeping of one queue's message log (``entries``: its live entries by
    sequence, shared with the queue)."""

    __slots__ = (
        "_clock",
        "_entries",
        "_moved",
        "_offsets",
        "_segment_bytes",
        "_store",
        "live_stored",
        "settling",
    )

    def __init__(
        self, entries: dict[int, QueueEntry], store: QueueStore, clock: Clock, segment_bytes: int
    ) -> None:
        self._entries = entries
        self._store = store
        self._clock = clock
        self._segment_bytes = segment_bytes
        # (the containers are made at first use: most queues of a broker are empty)
        self._offsets: list[int] | None = None  # heap of live offsets (lazy deletion)
        # offset -> seq of live records whose offset != seq
        self._moved: dict[int, int] | None = None
        self.live_stored = 0  # estimated log bytes of live records
        # Dead-lettered records whose copies are not on disk yet: offset -> (seq, delivery
        # count). Not live, but kept in the log (reclaim, snapshots) until settled; changed
        # only through hold() and release().
        self.settling = _NONE_SETTLING

    def hold(self, offset: int, seq: int, delivery_count: int) -> None:
        """Keep the record at ``offset`` (dead-lettered, its copies not on disk yet)."""
        if self.settling is _NONE_SETTLING:
            self.settling = {}
        self.settling[offset] = (seq, delivery_count)

    def release(self, offsets: list[int]) -> None:
        """The records at ``offsets`` are settled: no longer kept."""
        if self.settling:
            for offset in offsets:
                self.settling.pop(offset, None)

    def added(self, entry: QueueEntry) -> None:
        """``entry`` became live (its record is in the log)."""
        if entry.offset != entry.seq:
            if self._moved is None:
                self._moved = {}
            self._moved[entry.offset] = entry.seq
        if self._offsets is None:
            self._offsets = []
        heapq.heappush(self._offsets, entry.offset)
        self.live_stored += entry.stored

    def removed(self, entry: QueueEntry) -> None:
        """``entry`` is no longer live (its offset is popped from the heap lazily)."""
        if entry.offset != entry.seq and self._moved is not None:
            self._moved.pop(entry.offset, None)
        self.live_stored -= entry.stored

    def relocate(self) -> list[int]:
        """Move the records pinning old segments to the tail; returns their old offsets (for
        the caller to settle) or an empty list when nothing pins."""
        first = self._first_live_offset()
        if first is None or not self._pinning(first):
            return []
        return self._move_to_tail(first)

    def reclaim_offset(self) -> int:
        """The offset the log may start at: the oldest live or settling record, else its end."""
        first = self._first_live_offset()
        if self.settling:
            first = min(self.settling) if first is None else min(first, *self.settling)
        return self._store.messages.next_offset if first is None else first

    def kept_records(self) -> list[tuple[int, int, int]]:
        """(offset, seq, delivery count) of every record a snapshot must keep."""
        kept = [(e.offset, e.seq, e.delivery_count) for e in self._entries.values()]
        kept += [(offset, seq, count) for offset, (seq, count) in self.settling.items()]
        return kept

    def _pinning(self, first: int) -> bool:
        log = self._store.messages
        dead = log.size_bytes - self.live_stored
        return (
            log.size_bytes > 2 * self._segment_bytes
            and dead > 3 * max(self.live_stored, 1)
            and log.next_offset - first > 1
        )

    def _move_to_tail(self, first: int) -> list[int]:
        """Re-append the oldest live records so the segments they pin can go."""
        store = self._store
        cutoff = first + (store.messages.next_offset - first) // 2
        now = self._clock.now_ms()
        old = sorted(
            (e for e in self._entries.values() if e.offset < cutoff), key=lambda e: e.offset
        )[:MOVE_BATCH]
        left: list[int] = []
        moved = self._moved if self._moved is not None else {}
        offsets = self._offsets if self._offsets is not None else []
        self._moved, self._offsets = moved, offsets
        for entry in old:
            new_offset = store.append(
                entry.seq, entry.message, entry.expires_at, now, keep=entry.keep
            )
            left.append(entry.offset)
            moved.pop(entry.offset, None)
            entry.offset = new_offset
            moved[new_offset] = entry.seq
            heapq.heappush(offsets, new_offset)
        return left

    def _first_live_offset(self) -> int | None:
        heap = self._offsets
        if not heap:
            return None
        entries = self._entries
        moved = self._moved
        while heap:
            offset = heap[0]
            entry = entries.get(offset if moved is None else moved.get(offset, offset))
            if entry is not None and entry.offset == offset:
                return offset
            heapq.heappop(heap)  # settled, or moved to the tail since
        return None
