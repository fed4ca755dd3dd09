"""A queue: ordered messages handed to consumers, acknowledged or returned, on a log.

How it works. Every live message is a :class:`QueueEntry` with a *sequence number* (its place
in FIFO order, stable for its whole life, also its delivery id) and the *offset* of its record
in the message log. Ready entries sit in one heap ordered by (priority descending, sequence), so
a priority queue hands out higher priorities first and FIFO within a level, and a returned
message goes back to its original place. Delivered-but-unacknowledged entries sit in
``_unacked``. Every settlement (ack, dead-letter, expiry, drop) and every delivery is written to
the queue's state log by :class:`~wharf.core.queues.store.QueueStore` so a restart restores
exactly the live messages and their delivery counts.

Expiry is lazy at the head, as in RabbitMQ: a message is dropped (or dead-lettered) when it
reaches the head after its expiry time; :meth:`tick` (run by the virtual host's timer) does the
same for idle queues, enforces ``x-expires``, and reclaims space: it advances the message log's
start to the oldest live record, and when a few old records pin much more dead space, moves
them to the tail (same sequence number, new offset) so the old segments can be deleted.

Dispatch is synchronous: :meth:`dispatch` pushes ready messages to consumers whose
``can_take()`` is true (only the active one under single-active-consumer) until the queue is
empty or nobody has credit. Consumers are grouped by their priority (AMQP's ``x-priority``
consume argument, 0 by default), highest first: a message goes to the highest-priority group
that has a consumer with credit, round robin within the group, so lower priorities receive
only while every higher-priority consumer is blocked (prefetch, flow). Publishing, acking,
rejecting and consumer changes dispatch by themselves; a front end calls :meth:`dispatch` when
a consumer's credit comes back.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, Protocol

from wharf.core.clock import Clock
from wharf.core.queues.args import MAX_PRIORITY_CAP, Overflow, QueueArgs
from wharf.core.queues.consumers import Consumer, Delivery
from wharf.core.queues.dead_letter import DeathReason
from wharf.core.queues.message import Message
from wharf.core.queues.records import stored_size
from wharf.core.queues.store import QueueStore, StoredMessage
from wharf.errors import AccessRefusedError, PreconditionError

__all__ = ["EnqueueResult", "Queue", "QueueEntry", "QueueHooks"]

# Move at most this many pinning records to the tail per maintenance pass.
_MOVE_BATCH = 1000


class QueueHooks(Protocol):
    """What a queue asks of its virtual host."""

    def dead_letter(
        self, queue: Queue, message: Message, reason: DeathReason, offset: int | None
    ) -> None:
        """Republish ``message`` to the queue's dead-letter exchange, then settle its record
        at ``offset`` in the queue's log with :meth:`Queue.settle` (None: it has none)."""
        ...

    def queue_unused(self, queue: Queue) -> None:
        """An auto-delete queue lost its last consumer."""
        ...


class QueueEntry:
    """One live message of a queue: its place, its log record, and maybe its message.

    ``held`` is the message when kept in memory, None when only the log has it; :attr:`message`
    reads it back from ``store`` then."""

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


class EnqueueResult(NamedTuple):
    """``accepted`` False: refused by x-overflow reject-publish(-dlx) (nack the publisher).
    ``sync_offset``: pass to :meth:`Queue.wait_durable` before confirming, when not None."""

    accepted: bool
    sync_offset: int | None = None


_SEQ_MASK = (1 << 64) - 1


class _PriorityLevel:
    """The consumers of one priority, in subscription order, and where round robin stands."""

    __slots__ = ("consumers", "priority", "rr")

    def __init__(self, priority: int, consumers: list[Consumer]) -> None:
        self.priority = priority
        self.consumers = consumers
        self.rr = 0
_REFUSED = EnqueueResult(False)
_ACCEPTED = EnqueueResult(True)


class Queue:
    """One queue of a virtual host; created by :class:`~wharf.core.queues.vhost.VirtualHost`.

    Counters (plain ints, for metrics and the HTTP API): ``published``, ``delivered``,
    ``acked``, ``redelivered``, ``dead_lettered``, ``expired``, ``dropped``; gauges:
    :attr:`message_count` (ready), :attr:`unacked_count`, :attr:`consumer_count`,
    :attr:`message_bytes`.
    """

    def __init__(
        self,
        vhost: str,
        name: str,
        *,
        durable: bool,
        auto_delete: bool,
        exclusive_owner: object | None,
        arguments: Mapping[str, Any],
        args: QueueArgs,
        store: QueueStore,
        clock: Clock,
        hooks: QueueHooks,
        segment_bytes: int,
        resident_bytes: int,
    ) -> None:
        self.vhost = vhost
        self.name = name
        self.durable = durable
        self.auto_delete = auto_delete
        self.exclusive_owner = exclusive_owner
        self.arguments: dict[str, Any] = dict(arguments)
        self.args = args
        self.store = store
        self._clock = clock
        self._hooks = hooks
        self._segment_bytes = segment_bytes
        # Body bytes of ready messages kept in memory; beyond them new messages are kept only
        # in the log and read back when delivered. Only where the log can give them back.
        self._resident_limit = resident_bytes if store.durable else None
        self._resident_bytes = 0  # body bytes held in memory by live entries
        # Heap of ready keys: the sequence number, with (cap - priority) from bit 64 on when
        # the queue has priorities. Plain ints keep the heap small and its comparisons cheap.
        self._ready: list[int] = []
        self._prioritised = args.max_priority is not None
        self._ready_bytes = 0
        self._expiring = 0  # ready entries with an expiry time
        self._max_limited = args.overflow is Overflow.DROP_HEAD and (
            args.max_length is not None or args.max_length_bytes is not None
        )
        self._entries: dict[int, QueueEntry] = {}  # seq -> live entry
        self._unacked: dict[int, QueueEntry] = {}
        self._offsets: list[int] = []  # heap of live offsets (lazy deletion)
        self._moved: dict[int, int] = {}  # offset -> seq of live records whose offset != seq
        self._live_bytes = 0
        self._live_stored = 0  # estimated log bytes of live records
        self._consumers: list[Consumer] = []  # in subscription order
        self._levels: list[_PriorityLevel] = []  # the same consumers by priority, highest first
        # Under x-single-active-consumer: the consumer that receives (see active_consumer).
        self._active: Consumer | None = None
        self._had_consumer = False
        self._dispatching = False
        self._again = False
        self._pending_settle: list[int] = []
        # Dead-lettered records whose copies are not on disk yet: offset -> (seq, delivery
        # count). Not live, but kept in the log (reclaim, snapshots) until settle().
        self._settling: dict[int, tuple[int, int]] = {}
        self._pending_delivered: list[int] = []
        self._fresh = -1
        self.last_used_ms = clock.now_ms()
        self.deleted = False
        self.published = 0
        self.delivered = 0
        self.acked = 0
        self.redelivered = 0
        self.dead_lettered = 0
        self.expired = 0
        self.dropped = 0

    # ----------------------------------------------------------------------------- gauges

    @property
    def message_count(self) -> int:
        """Ready messages (what queue.declare-ok reports)."""
        return len(self._ready)

    @property
    def unacked_count(self) -> int:
        return len(self._unacked)

    @property
    def consumer_count(self) -> int:
        return len(self._consumers)

    @property
    def message_bytes(self) -> int:
        """Body bytes of ready and unacknowledged messages."""
        return self._live_bytes

    @property
    def resident_bytes(self) -> int:
        """Body bytes held in memory (the rest are read back from the log when delivered)."""
        return self._resident_bytes

    @property
    def consumers(self) -> tuple[Consumer, ...]:
        return tuple(self._consumers)

    @property
    def exclusive(self) -> bool:
        return self.exclusive_owner is not None

    @property
    def active_consumer(self) -> Consumer | None:
        """Under single-active-consumer, the one consumer that receives messages.

        The first consumer becomes active. When one with a higher ``x-priority`` subscribes
        (or, among the rest, when the active one leaves) the highest-priority consumer, the
        earliest among equals, takes over: at once if the active one left, else once the
        active one has no unacknowledged message left; until then nobody gets new deliveries,
        so the queue's order is kept."""
        return self._active if self.args.single_active_consumer else None

    def _preferred(self) -> Consumer:
        return self._levels[0].consumers[0]

    def _holds_unacked(self, consumer: Consumer) -> bool:
        return any(entry.consumer is consumer for entry in self._unacked.values())

    # ---------------------------------------------------------------------------- recovery

    def restore(self, stored: Iterable[StoredMessage]) -> None:
        """Load the live records found by :meth:`QueueStore.recover` (at open)."""
        cap = self.args.max_priority
        for item in stored:
            entry = QueueEntry(
                item.seq,
                item.offset,
                None,
                0 if cap is None else min(item.priority, cap),
                item.expires_at,
                item.delivery_count,
                item.size,
                item.stored,
                True,
                self.store,
            )
            self._hold(entry, item.message)
            self._add_live(entry)
            self._push_ready(entry)

    # ----------------------------------------------------------------------------- publish

    def enqueue(self, message: Message) -> EnqueueResult:
        """Add a routed message; deliver it if a consumer has credit.

        Under ``reject-publish`` a full queue refuses it (``accepted`` False); under
        ``reject-publish-dlx`` it is also dead-lettered (reason maxlen). Under ``drop-head`` the
        oldest ready messages are dropped (dead-lettered, reason maxlen) to make room.
        """
        if self.deleted:
            return _REFUSED
        now = self._clock.now_ms()
        if self._expiring:
            self._expire_head(now)
        if self.args.overflow is not Overflow.DROP_HEAD and self._is_full(len(message.body)):
            if self.args.overflow is Overflow.REJECT_PUBLISH_DLX:
                self.dead_lettered += 1
                self._hooks.dead_letter(self, message, DeathReason.MAXLEN, None)
            self._commit_state()
            return _REFUSED
        store = self.store
        keep = store.state is not None and message.persistent
        # A message's sequence number is the offset of its first record: unique for the
        # queue's whole life, across restarts, and kept when the record moves to the tail.
        seq = store.next_offset
        expires_at = self._expiry_for(message, now)
        offset = store.append(seq, message, expires_at, now, keep=keep)
        cap = self.args.max_priority
        entry = QueueEntry(
            seq,
            offset,
            None,
            0 if cap is None else min(message.priority, cap),
            expires_at,
            0,
            len(message.body),
            stored_size(message),
            keep,
            store,
        )
        self._hold(entry, message)
        self._add_live(entry)
        self._push_ready(entry)
        self.published += 1
        if self._consumers:
            self._fresh = seq  # may still go to a waiting consumer at its expiry instant (TTL 0)
            self.dispatch()
            self._fresh = -1
        if self._expiring:
            self._expire_head(self._clock.now_ms())
        if self._max_limited:
            self._enforce_max_length()
        self._commit_state()
        return EnqueueResult(True, offset) if keep else _ACCEPTED

    async def wait_durable(self, offset: int) -> None:
        """Wait until the message at ``offset`` is fsynced (under ``--fsync always``).

        Returns at once if the queue was deleted meanwhile: the message is gone either way."""
        if not self.deleted:
            await self.store.wait_durable(offset)

    def _expiry_for(self, message: Message, now: int) -> int | None:
        ttl = self.args.message_ttl_ms
        per_message = message.expiration_ms
        if per_message is not None:
            ttl = per_message if ttl is None else min(ttl, per_message)
        return None if ttl is None else now + ttl

    def _hold(self, entry: QueueEntry, message: Message | None) -> None:
        """Keep ``message`` in memory with its entry if within the resident budget."""
        limit = self._resident_limit
        if message is not None and (limit is None or self._resident_bytes + entry.size <= limit):
            entry.held = message
            self._resident_bytes += entry.size

    def _is_full(self, incoming: int) -> bool:
        if self.args.max_length is not None and len(self._ready) >= self.args.max_length:
            return True
        limit = self.args.max_length_bytes
        return limit is not None and self._ready_bytes + incoming > limit

    def _enforce_max_length(self) -> None:
        if self.args.overflow is not Overflow.DROP_HEAD:
            return
        max_len = self.args.max_length
        max_bytes = self.args.max_length_bytes
        while self._ready and (
            (max_len is not None and len(self._ready) > max_len)
            or (max_bytes is not None and self._ready_bytes > max_bytes)
        ):
            entry = self._pop_ready()
            self.dropped += 1
            self._dead_letter_entry(entry, DeathReason.MAXLEN)

    # ---------------------------------------------------------------------------- dispatch

    def dispatch(self) -> None:
        """Push ready messages to consumers with credit (safe to call re-entrantly)."""
        if self._dispatching:
            self._again = True
            return
        self._dispatching = True
        try:
            again = True
            while again:
                self._again = False
                self._dispatch_round()
                again = self._again
        finally:
            self._dispatching = False
        self._commit_state()

    def _dispatch_round(self) -> None:
        if not self._consumers:
            return
        active = self.active_consumer
        if active is not None:
            preferred = self._preferred()
            if active is not preferred:
                if self._holds_unacked(active):
                    return  # the hand-over waits for the active consumer's acks
                self._active = active = preferred
            if self._ready:
                self._serve(_PriorityLevel(0, [active]))
            return
        if not self._ready:
            return
        for level in list(self._levels):
            if not self._ready:
                return
            self._serve(level)

    def _serve(self, level: _PriorityLevel) -> None:
        """Hand ready messages round robin to the consumers of ``level`` while one has credit."""
        candidates = list(level.consumers)
        n = len(candidates)
        idle = 0
        while self._ready and idle < n:
            consumer = candidates[level.rr % n]
            level.rr += 1
            if consumer not in self._consumers or not consumer.can_take():
                idle += 1
                continue
            if self._expiring and self._ready[0] & _SEQ_MASK != self._fresh:
                self._expire_head(self._clock.now_ms())
            if not self._ready:
                return
            idle = 0
            entry = self._pop_ready()
            self._hand_out(entry, consumer, consumer.no_ack, consumer.tag)

    def _hand_out(
        self, entry: QueueEntry, consumer: Consumer | None, no_ack: bool, tag: str | None
    ) -> Delivery:
        entry.delivery_count += 1
        redelivered = entry.delivery_count > 1
        self.delivered += 1
        if redelivered:
            self.redelivered += 1
        message = entry.held
        if message is None:
            message = self.store.read_message(entry.offset)
        elif self._resident_limit is not None:
            # The consumer has it now; a redelivery reads it back from the log.
            entry.held = None
            self._resident_bytes -= entry.size
        delivery = Delivery(
            self,
            entry.seq,
            message,
            redelivered,
            entry.delivery_count,
            tag,
            len(self._ready),
        )
        if no_ack:
            self._remove_live(entry)
            self.acked += 1
        else:
            entry.consumer = consumer
            self._unacked[entry.seq] = entry
            if self.store.durable:
                self._pending_delivered.append(entry.seq)
        if consumer is not None:
            consumer.deliver(delivery)
        return delivery

    def peek(self, count: int) -> list[QueueEntry]:
        """The next ``count`` ready messages in delivery order, left in place (browsing)."""
        entries = self._entries
        return [entries[key & _SEQ_MASK] for key in heapq.nsmallest(count, self._ready)]

    def basic_get(self, no_ack: bool) -> Delivery | None:
        """Take the head message, or None when the queue has none ready (basic.get-empty)."""
        self.last_used_ms = self._clock.now_ms()
        self._expire_head(self.last_used_ms)
        if not self._ready:
            self._commit_state()
            return None
        entry = self._pop_ready()
        delivery = self._hand_out(entry, None, no_ack, None)
        self._commit_state()
        return delivery

    # -------------------------------------------------------------------------- settlement

    def ack(self, delivery_ids: Iterable[int]) -> None:
        """Settle delivered messages; raises PreconditionError for an unknown id (406), before
        settling any. Acks for a deleted queue are ignored (the messages are gone already)."""
        if self.deleted:
            return
        entries = self._take_unacked(delivery_ids)
        for entry in entries:
            self._remove_live(entry)
        self.acked += len(entries)
        self._commit_state()
        self.dispatch()

    def reject(self, delivery_ids: Iterable[int], requeue: bool) -> None:
        """basic.reject / basic.nack: return the messages to the queue (at their original place,
        redelivered) or dead-letter them (reason rejected). A returned message whose delivery
        count exceeds x-delivery-limit is dead-lettered with reason delivery_limit instead.
        Unknown ids raise PreconditionError (406) before anything changes."""
        if self.deleted:
            return
        entries = self._take_unacked(delivery_ids)
        for entry in entries:
            if requeue:
                self._return(entry)
            else:
                self._dead_letter_entry(entry, DeathReason.REJECTED)
        self._commit_state()
        self.dispatch()

    def _take_unacked(self, delivery_ids: Iterable[int]) -> list[QueueEntry]:
        ids = list(dict.fromkeys(delivery_ids))
        for delivery_id in ids:
            if delivery_id not in self._unacked:
                raise PreconditionError(f"unknown delivery id {delivery_id} on queue '{self.name}'")
        entries = [self._unacked.pop(i) for i in ids]
        for entry in entries:
            entry.consumer = None
        return entries

    def _return(self, entry: QueueEntry) -> None:
        limit = self.args.delivery_limit
        if limit is not None and entry.delivery_count > limit:
            self._dead_letter_entry(entry, DeathReason.DELIVERY_LIMIT)
            return
        self._push_ready(entry)

    def purge(self) -> int:
        """Drop every ready message (unacknowledged ones stay); returns how many."""
        count = len(self._ready)
        while self._ready:
            self._remove_live(self._pop_ready())
        self._commit_state()
        return count

    # --------------------------------------------------------------------------- consumers

    def add_consumer(self, consumer: Consumer, *, priority: int = 0) -> None:
        """Subscribe with a ``priority`` (higher is served first, see the module docstring);
        raises AccessRefusedError (403) against an exclusive consumer."""
        if any(c.exclusive for c in self._consumers) or (consumer.exclusive and self._consumers):
            raise AccessRefusedError(
                f"queue '{self.name}' in vhost '{self.vhost}' in exclusive use"
            )
        self._consumers.append(consumer)
        levels = self._levels
        at = 0
        while at < len(levels) and levels[at].priority > priority:
            at += 1
        if at < len(levels) and levels[at].priority == priority:
            levels[at].consumers.append(consumer)
        else:
            levels.insert(at, _PriorityLevel(priority, [consumer]))
        if self._active is None:
            self._active = consumer
        self._had_consumer = True
        self.last_used_ms = self._clock.now_ms()
        self.dispatch()

    def remove_consumer(self, consumer: Consumer, *, requeue_unacked: bool = True) -> None:
        """Unsubscribe. With ``requeue_unacked`` (consumer or channel gone) its unacknowledged
        messages return to the queue, redelivered; basic.cancel passes False and the channel
        settles them later. An auto-delete queue is deleted when its last consumer leaves."""
        if consumer not in self._consumers:
            return
        self._consumers.remove(consumer)
        for level in self._levels:
            if consumer in level.consumers:
                level.consumers.remove(consumer)
                if not level.consumers:
                    self._levels.remove(level)
                break
        if consumer is self._active:
            self._active = self._preferred() if self._levels else None
        self.last_used_ms = self._clock.now_ms()
        if requeue_unacked:
            mine = [e for e in self._unacked.values() if e.consumer is consumer]
            for entry in mine:
                del self._unacked[entry.seq]
                entry.consumer = None
                self._return(entry)
        self._commit_state()
        if self.auto_delete and self._had_consumer and not self._consumers:
            self._hooks.queue_unused(self)
            return
        self.dispatch()

    # ------------------------------------------------------------------------------- timer

    def next_deadline(self) -> int | None:
        """The next time (ms) :meth:`tick` has work: head expiry or x-expires."""
        deadlines: list[int] = []
        head_expiry = self._head().expires_at if self._ready else None
        if head_expiry is not None:
            deadlines.append(head_expiry)
        if self.args.expires_ms is not None and not self._consumers:
            deadlines.append(self.last_used_ms + self.args.expires_ms)
        return min(deadlines) if deadlines else None

    def idle_expired(self, now_ms: int) -> bool:
        """x-expires: unused (no consumers, no basic.get, no redeclare) for that long."""
        return (
            self.args.expires_ms is not None
            and not self._consumers
            and now_ms - self.last_used_ms >= self.args.expires_ms
        )

    def tick(self, now_ms: int) -> None:
        """Expire messages at the head and dispatch."""
        self._expire_head(now_ms)
        self._commit_state()
        self.dispatch()

    async def maintain(self) -> None:
        """Reclaim log space and compact the state log (run periodically)."""
        self._commit_state()
        self.store.write_pending()
        first = self._first_live_offset()
        log = self.store.messages
        if first is not None and self._pinning(first):
            self._move_to_tail(first)
            self._commit_state()
            first = self._first_live_offset()
        if self._settling:
            first = min(self._settling) if first is None else min(first, *self._settling)
        self.store.reclaim(log.next_offset if first is None else first)
        if self.store.needs_snapshot():
            live = [(e.offset, e.seq, e.delivery_count) for e in self._entries.values()]
            live += [(offset, seq, count) for offset, (seq, count) in self._settling.items()]
            await self.store.snapshot(live)

    def _pinning(self, first: int) -> bool:
        log = self.store.messages
        dead = log.size_bytes - self._live_stored
        return (
            log.size_bytes > 2 * self._segment_bytes
            and dead > 3 * max(self._live_stored, 1)
            and log.next_offset - first > 1
        )

    def _move_to_tail(self, first: int) -> None:
        """Re-append the oldest live records so the segments they pin can go."""
        log = self.store.messages
        cutoff = first + (log.next_offset - first) // 2
        now = self._clock.now_ms()
        old = sorted(
            (e for e in self._entries.values() if e.offset < cutoff), key=lambda e: e.offset
        )[:_MOVE_BATCH]
        for entry in old:
            new_offset = self.store.append(
                entry.seq, entry.message, entry.expires_at, now, keep=entry.keep
            )
            self._pending_settle.append(entry.offset)
            self._moved.pop(entry.offset, None)
            entry.offset = new_offset
            self._moved[new_offset] = entry.seq
            heapq.heappush(self._offsets, new_offset)

    def _first_live_offset(self) -> int | None:
        heap = self._offsets
        entries = self._entries
        while heap:
            offset = heap[0]
            entry = entries.get(self._moved.get(offset, offset))
            if entry is not None and entry.offset == offset:
                return offset
            heapq.heappop(heap)  # settled, or moved to the tail since
        return None

    # --------------------------------------------------------------------------- internals

    def _add_live(self, entry: QueueEntry) -> None:
        self._entries[entry.seq] = entry
        if entry.offset != entry.seq:
            self._moved[entry.offset] = entry.seq
        heapq.heappush(self._offsets, entry.offset)
        self._live_bytes += entry.size
        self._live_stored += entry.stored

    def _remove_live(self, entry: QueueEntry, *, settle: bool = True) -> None:
        del self._entries[entry.seq]
        if entry.offset != entry.seq:
            self._moved.pop(entry.offset, None)
        self._live_bytes -= entry.size
        self._live_stored -= entry.stored
        if settle:
            self._pending_settle.append(entry.offset)
        if entry.held is not None:
            self._resident_bytes -= entry.size

    def _push_ready(self, entry: QueueEntry) -> None:
        key = entry.seq
        if self._prioritised:
            key |= (MAX_PRIORITY_CAP - entry.priority) << 64
        heapq.heappush(self._ready, key)
        self._ready_bytes += entry.size
        if entry.expires_at is not None:
            self._expiring += 1

    def _head(self) -> QueueEntry:
        return self._entries[self._ready[0] & _SEQ_MASK]

    def _pop_ready(self) -> QueueEntry:
        entry = self._entries[heapq.heappop(self._ready) & _SEQ_MASK]
        self._ready_bytes -= entry.size
        if entry.expires_at is not None:
            self._expiring -= 1
        return entry

    def _expire_head(self, now_ms: int) -> None:
        if not self._expiring:
            return
        while self._ready:
            head = self._head()
            if head.expires_at is None or head.expires_at > now_ms:
                return
            self._pop_ready()
            self.expired += 1
            self._dead_letter_entry(head, DeathReason.EXPIRED)

    def _dead_letter_entry(self, entry: QueueEntry, reason: DeathReason) -> None:
        if self.args.dead_letter_exchange is None:
            self._remove_live(entry)
            return
        # The record stays unsettled in the log until the dead-lettered copies are on disk
        # (the virtual host settles it then): a crash in between keeps the message here.
        self._remove_live(entry, settle=False)
        self._settling[entry.offset] = (entry.seq, entry.delivery_count)
        self.dead_lettered += 1
        self._hooks.dead_letter(self, entry.message, reason, entry.offset)

    def settle(self, offsets: list[int]) -> None:
        """Record that the messages at ``offsets`` left the queue for good (see
        :meth:`QueueHooks.dead_letter`); nothing once the queue is deleted."""
        for offset in offsets:
            self._settling.pop(offset, None)
        if not self.deleted:
            self.store.settle(offsets)

    def _commit_state(self) -> None:
        if self._pending_settle:
            self.store.settle(self._pending_settle)
            self._pending_settle = []
        if self._pending_delivered:
            self.store.delivered(self._pending_delivered)
            self._pending_delivered = []

    def detach(self) -> list[Consumer]:
        """Mark deleted and return the consumers (the virtual host cancels them)."""
        self.deleted = True
        consumers, self._consumers = self._consumers, []
        self._levels = []
        self._active = None
        self._ready.clear()
        self._expiring = 0
        self._unacked.clear()
        self._entries.clear()
        return consumers
