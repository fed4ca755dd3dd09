"""One live message of a queue: its place in FIFO order, its log record, maybe its body."""

from __future__ import annotations

from typing import TYPE_CHECKING

from wharf.core.queues.message import Message
from wharf.core.queues.store import QueueStore

if TYPE_CHECKING:
    from wharf.core.queues.consumers import Consumer

__all__ = ["QueueEntry"]


class QueueEntry:
    """One live message of a queue: its place, its log record, and maybe its message.

    ``seq`` is its place in FIFO order, stable for its whole life (also its delivery id);
    ``offset`` is where its record is in the message log (it changes when the record moves to
    the tail, see :mod:`wharf.core.queues.reclaim`). ``held`` is the message when kept in
    memory, None when only the log has it; :attr:`message` reads it back from ``store`` then.
    ``consumer`` is who holds it unacknowledged, if anyone."""

    __slots__ = (
        "consumer",
        "delivery_count",
        "expires_at",
        "held",
        "keep",
        "offset",
        "priority",
        "seq",
        "size",
        "store",
        "stored",
    )

    def __init__(
        self,
        seq: int,
        offset: int,
        held: Message | None,
        priority: int,
        expires_at: int | None,
        delivery_count: int,
        size: int,
        stored: int,
        keep: bool,
        store: QueueStore,
    ) -> None:
        self.seq = seq
        self.offset = offset
        self.held = held
        self.priority = priority
        self.expires_at = expires_at
        self.delivery_count = delivery_count
        self.consumer: Consumer | None = None
        self.size = size  # body bytes
        self.stored = stored  # estimated log bytes
        self.keep = keep  # survives a restart
        self.store = store

    @property
    def message(self) -> Message:
        held = self.held
        return self.store.read_message(self.offset) if held is None else held
