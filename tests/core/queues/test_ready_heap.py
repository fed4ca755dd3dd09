"""ReadyHeap: delivery order (priority, then FIFO), returns to the original place, and the
byte and expiry figures kept alongside."""

from __future__ import annotations

from wharf.core.config import BrokerConfig
from wharf.core.queues.entry import QueueEntry
from wharf.core.queues.ready import ReadyHeap
from wharf.core.queues.store import memory_store
from wharf.testing.clock import VirtualClock


def make_entries(*specs: tuple[int, int, int | None]) -> dict[int, QueueEntry]:
    """Entries by sequence from (seq, priority, expires_at); each body is seq bytes long."""
    store = memory_store(BrokerConfig(), VirtualClock())
    return {
        seq: QueueEntry(seq, seq, None, priority, expires, 0, seq, seq, False, store)
        for seq, priority, expires in specs
    }


def test_fifo_without_priorities_even_when_entries_have_them() -> None:
    entries = make_entries((3, 0, None), (1, 9, None), (2, 5, None))
    ready = ReadyHeap(entries, prioritised=False)
    for seq in (3, 1, 2):
        ready.push(entries[seq])
    assert [e.seq for e in ready.peek(10)] == [1, 2, 3]
    assert [ready.pop().seq for _ in range(3)] == [1, 2, 3]
    assert not ready and len(ready) == 0


def test_higher_priority_first_then_fifo_and_a_return_goes_back_in_place() -> None:
    entries = make_entries((1, 0, None), (2, 5, None), (3, 5, None), (4, 1, None))
    ready = ReadyHeap(entries, prioritised=True)
    for entry in entries.values():
        ready.push(entry)
    assert ready.head().seq == 2 and ready.head_seq() == 2
    taken = ready.pop()
    assert taken.seq == 2
    ready.push(taken)  # returned: before 3, which has the same priority
    assert [ready.pop().seq for _ in range(4)] == [2, 3, 4, 1]


def test_bytes_and_expiring_follow_push_pop_and_clear() -> None:
    entries = make_entries((10, 0, None), (20, 0, 500), (30, 0, 900))
    ready = ReadyHeap(entries, prioritised=False)
    for entry in entries.values():
        ready.push(entry)
    assert (len(ready), ready.bytes, ready.expiring) == (3, 60, 2)
    ready.pop()
    assert (ready.bytes, ready.expiring) == (50, 2)
    ready.pop()
    assert (ready.bytes, ready.expiring) == (30, 1)
    ready.clear()
    assert (len(ready), ready.bytes, ready.expiring) == (0, 0, 0)
