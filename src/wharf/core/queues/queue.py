"""A queue: ordered messages handed to consumers, acknowledged or returned, on a log.

How it works. Every live message is a :class:`~wharf.core.queues.entry.QueueEntry` with a
*sequence number* (its place in FIFO order, stable for its whole life, also its delivery id)
and the *offset* of its record in the message log. The queue is a facade over three parts:

* the ready entries, in a :class:`~wharf.core.queues.ready.ReadyHeap` ordered by (priority
  descending, sequence), so a priority queue hands out higher priorities first and FIFO within
  a level, and a returned message goes back to its original place;
* the subscribers, in a :class:`~wharf.core.queues.consumer_set.ConsumerSet` that decides who
  is offered the next message (consumer priorities, round robin, single active consumer);
* the log-space bookkeeping, in a :class:`~wharf.core.queues.reclaim.Reclaimer`.

Delivered-but-unacknowledged entries sit in ``_unacked``. Every settlement (ack, dead-letter,
expiry, drop) and every delivery is written to the queue's state log by
:class:`~wharf.core.queues.store.QueueStore` so a restart restores exactly the live messages
and their delivery counts.

Expiry is lazy at the head, as in RabbitMQ: a message is dropped (or dead-lettered) when it
reaches the head after its expiry time; :meth:`Queue.tick` (run by the virtual host's timer)
does the same for idle queues, and :meth:`Queue.maintain` reclaims space.

Dispatch is synchronous: :meth:`Queue.dispatch` pushes ready messages to consumers whose
``can_take()`` is true until the queue is empty or nobody has credit. Publishing, acking,
rejecting and consumer changes dispatch by themselves; a front end calls
:meth:`Queue.dispatch` when a consumer's credit comes back.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, NamedTuple, Protocol

from wharf.core.clock import Clock
from wharf.core.queues.args import Overflow, QueueArgs
from wharf.core.queues.consumer_set import ConsumerSet
from wharf.core.queues.consumers import Consumer, Delivery
from wharf.core.queues.dead_letter import DeathReason
from wharf.core.queues.entry import QueueEntry
from wharf.core.queues.message import Message
from wharf.core.queues.ready import ReadyHeap
from wharf.core.queues.reclaim import Reclaimer
from wharf.core.queues.records import stored_size
from wharf.core.queues.store import NONE_PENDING, QueueStore, ReadBack, StoredMessage
from wharf.errors import AccessRefusedError, PreconditionError

__all__ = ["EnqueueResult", "Queue", "QueueHooks"]


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

    def queue_active(self, queue: Queue) -> None:
        """The queue changed: it may have timed work or maintenance to do (a virtual host's
        timer looks only at such queues, until they have none)."""
        ...


class EnqueueResult(NamedTuple):
    """``accepted`` False: refused by x-overflow reject-publish(-dlx) (nack the publisher).
    ``sync_offset``: pass to :meth:`Queue.wait_durable` before confirming, when not None."""

    accepted: bool
    sync_offset: int | None = None


# The arguments of a queue declared without any (shared, never changed).
_NO_ARGUMENTS: dict[str, Any] = {}

_REFUSED = EnqueueResult(False)
_ACCEPTED = EnqueueResult(True)


class Queue:
    """One queue of a virtual host; created by :class:`~wharf.core.queues.vhost.VirtualHost`.

    Counters (plain ints, for metrics and the HTTP API): ``published``, ``delivered``,
    ``acked``, ``redelivered``, ``dead_lettered``, ``expired``, ``dropped``; gauges:
    :attr:`message_count` (ready), :attr:`unacked_count`, :attr:`consumer_count`,
    :attr:`message_bytes`.
    """

    # Slots: a broker holds tens of thousands of queues, most of them idle (docs/performance.md)
    __slots__ = (
        "_again",
        "_clock",
        "_consumers",
        "_dispatching",
        "_entries",
        "_fresh",
        "_had_consumer",
        "_hooks",
        "_live_bytes",
        "_max_limited",
        "_pending_delivered",
        "_pending_settle",
        "_ready",
        "_recovery",
        "_resident_bytes",
        "_resident_limit",
        "_space",
        "_unacked",
        "acked",
        "args",
        "arguments",
        "auto_delete",
        "dead_lettered",
        "deleted",
        "delivered",
        "dropped",
        "durable",
        "exclusive_owner",
        "expired",
        "last_used_ms",
        "name",
        "published",
        "recovering",
        "redelivered",
        "store",
        "vhost",
        "__weakref__",
    )

    fetches_remotely: ClassVar[bool] = False
    """Whether basic.get must await :meth:`fetch` (a queue of the cluster) rather than call
    :meth:`basic_get`."""

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
        self.arguments: dict[str, Any] = dict(arguments) if arguments else _NO_ARGUMENTS
        self.args = args
        self.store = store
        self._clock = clock
        self._hooks = hooks
        # Body bytes of ready messages kept in memory; beyond them new messages are kept only
        # in the log and read back when delivered. Only where the log can give them back.
        self._resident_limit = resident_bytes if store.durable else None
        self._resident_bytes = 0  # body bytes held in memory by live entries
        self._max_limited = args.overflow is Overflow.DROP_HEAD and (
            args.max_length is not None or args.max_length_bytes is not None
        )
        self._entries: dict[int, QueueEntry] = {}  # seq -> live entry
        self._ready = ReadyHeap(self._entries, prioritised=args.max_priority is not None)
        self._unacked: dict[int, QueueEntry] = {}
        self._space = Reclaimer(self._entries, store, clock, segment_bytes)
        self._live_bytes = 0
        self._consumers = ConsumerSet(single_active=args.single_active_consumer)
        self._had_consumer = False
        self._dispatching = False
        self._again = False
        # (NONE_PENDING, shared and never changed, while none are: most queues are idle)
        self._pending_settle = NONE_PENDING
        self._pending_delivered = NONE_PENDING
        self._fresh = -1
        self.last_used_ms = clock.now_ms()
        self.deleted = False
        # Logs left by a crash, not read back yet: see :meth:`recover_later`.
        self.recovering = False
        self._recovery: concurrent.futures.Future[ReadBack] | None = None
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
        """Ready messages (what queue.declare-ok reports; recovers the queue if it is
        :attr:`recovering`)."""
        if self.recovering:
            self._recover_now()
        return len(self._ready)

    @property
    def unacked_count(self) -> int:
        return len(self._unacked)

    @property
    def consumer_count(self) -> int:
        return len(self._consumers)

    @property
    def message_bytes(self) -> int:
        """Body bytes of ready and unacknowledged messages (recovers the queue if it is
        :attr:`recovering`)."""
        if self.recovering:
            self._recover_now()
        return self._live_bytes

    @property
    def resident_bytes(self) -> int:
        """Body bytes held in memory (the rest are read back from the log when delivered)."""
        return self._resident_bytes

    @property
    def consumers(self) -> tuple[Consumer, ...]:
        return self._consumers.members

    @property
    def exclusive(self) -> bool:
        return self.exclusive_owner is not None

    @property
    def active_consumer(self) -> Consumer | None:
        """Under single-active-consumer, the one consumer that receives messages (see
        :mod:`wharf.core.queues.consumer_set` for the hand-over)."""
        return self._consumers.active

    @property
    def awaits_first(self) -> bool:
        """Whether basic.consume must await :meth:`admit` and basic.get :meth:`fetch` before
        the synchronous calls: a queue of the cluster, or one whose logs are closed or not
        read back since a crash (they are opened on the fsync pool rather than by the first
        read)."""
        return self.fetches_remotely or self.store.cold or self.recovering

    @property
    def unloadable(self) -> bool:
        """Whether the queue's logs may be closed now: nobody consumes or holds its messages
        unacknowledged, and nothing it wrote is pending or unflushed."""
        return (
            not self.recovering  # its logs open to be read back: they stay open for that
            and not self._consumers
            and not self._unacked
            and not self._space.settling
            and not self._pending_settle
            and not self._pending_delivered
            and self.store.idle
        )

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
            self._ready.push(entry)

    def recover_later(self) -> None:
        """Leave the queue's logs, which a crash left, unread until the virtual host's
        background reads them back (:meth:`begin_recovery`) or the queue's first use: a
        restart opens its listeners without reading every queue. Until then the queue holds
        nothing in memory; whatever needs its contents (a publish, a consumer, basic.get,
        purge, its message count) reads them back first, on the fsync pool when the caller
        can wait (:meth:`recovered`), else at once on this thread. A use takes the place of
        the background's reading if it has not begun, else waits for its end and takes its
        result: the logs are never opened twice at once."""
        self.recovering = True

    def begin_recovery(self) -> concurrent.futures.Future[ReadBack] | None:
        """The background's reading back of the logs, for :meth:`recover_into` on the fsync
        pool; None when there is nothing to do (read back, deleted, or opening already)."""
        if self._recovery is not None or not self.recovering or self.deleted:
            return None
        if not self.store.untouched:  # (a use opens its logs)
            return None
        recovery = self._recovery = concurrent.futures.Future()
        return recovery

    def recover_into(self, recovery: concurrent.futures.Future[ReadBack]) -> None:
        """On the fsync pool: read the logs back and close them again into ``recovery``
        (:meth:`QueueStore.read_back_closed`); nothing when a use took its place first."""
        if not recovery.set_running_or_notify_cancel():
            return
        try:
            recovery.set_result(self.store.read_back_closed())
        except BaseException as exc:
            recovery.set_exception(exc)

    def end_recovery(self, recovery: concurrent.futures.Future[ReadBack]) -> None:
        """On the loop's thread after :meth:`recover_into`: take what it read (unless a use
        took it already); raises its StorageError."""
        if self._recovery is not recovery:
            return
        self._recovery = None
        if recovery.cancelled():
            return
        read = recovery.result()
        if self.recovering and not self.deleted:
            self._take(read)

    async def recovered(self) -> None:
        """Read the logs back if the queue is still :attr:`recovering` (on the fsync pool, or
        by the background's reading under way); raises StorageError when they cannot be
        read."""
        if not self.recovering or self.deleted:
            return
        recovery = self._recovery
        if recovery is not None and not recovery.cancel():
            with contextlib.suppress(Exception):  # (else read here, which raises it)
                await asyncio.shield(asyncio.wrap_future(recovery))
        else:
            await self.store.open_logs()
        if self.recovering and not self.deleted:  # else a synchronous use recovered it
            self._recover_now()

    def _recover_now(self) -> None:
        recovery, self._recovery = self._recovery, None
        if recovery is not None and not recovery.cancel():  # under way: its end first
            if recovery.exception() is None:  # (else read here, which raises it again)
                self._take(recovery.result())
                return
        self._restored(self.store.recover_now())

    def _take(self, read: ReadBack) -> None:
        """Stand on what the pool's job read back, its logs closed again."""
        self.store.take_read_back(read.summary)
        self._restored(read.live)

    def _restored(self, live: list[StoredMessage]) -> None:
        self.recovering = False
        self.restore(live)
        self._hooks.queue_active(self)  # the timer looks at its expiries

    def kept_entries(self) -> list[tuple[int, int, int, int | None, int, int, int]] | None:
        """What a restart restores without reading the logs: (offset, seq, priority, expiry,
        delivery count, body bytes, stored bytes) of every live message kept across restarts;
        None while a dead-lettered record is not settled yet (its logs say more) or the queue
        is still :attr:`recovering`."""
        if self._space.settling or self.recovering:
            return None
        return [
            (e.offset, e.seq, e.priority, e.expires_at, e.delivery_count, e.size, e.stored)
            for e in self._entries.values()
            if e.keep
        ]

    # ----------------------------------------------------------------------------- publish

    def enqueue(self, message: Message) -> EnqueueResult:
        """Add a routed message; deliver it if a consumer has credit.

        Under ``reject-publish`` a full queue refuses it (``accepted`` False); under
        ``reject-publish-dlx`` it is also dead-lettered (reason maxlen). Under ``drop-head`` the
        oldest ready messages are dropped (dead-lettered, reason maxlen) to make room.
        """
        if self.deleted:
            return _REFUSED
        if self.recovering:
            self._recover_now()
        now = self._clock.now_ms()
        if self._ready.expiring:
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
        self._ready.push(entry)
        self.published += 1
        if self._consumers.members_list:
            self._fresh = seq  # may still go to a waiting consumer at its expiry instant (TTL 0)
            self.dispatch()
            self._fresh = -1
        if self._ready.expiring:
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
        return limit is not None and self._ready.bytes + incoming > limit

    def _enforce_max_length(self) -> None:
        if self.args.overflow is not Overflow.DROP_HEAD:
            return
        max_len = self.args.max_length
        max_bytes = self.args.max_length_bytes
        ready = self._ready
        while ready and (
            (max_len is not None and len(ready) > max_len)
            or (max_bytes is not None and ready.bytes > max_bytes)
        ):
            entry = ready.pop()
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
        self._consumers.serve(self._offer, self._has_ready, self._holds_unacked)

    def _has_ready(self) -> bool:
        return bool(self._ready.keys)

    def _offer(self, consumer: Consumer) -> bool:
        """Hand the head to ``consumer``; whether more messages are ready (False also when
        expiry left none to hand)."""
        ready = self._ready
        keys = ready.keys
        if ready.expiring and ready.head_seq() != self._fresh:
            self._expire_head(self._clock.now_ms())
        if not keys:
            return False
        self._hand_out(ready.pop(), consumer, consumer.no_ack, consumer.tag)
        return bool(keys)

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
            len(self._ready.keys),
        )
        if no_ack:
            self._remove_live(entry)
            self.acked += 1
        else:
            entry.consumer = consumer
            self._unacked[entry.seq] = entry
            if self.store.durable:
                if self._pending_delivered is NONE_PENDING:
                    self._pending_delivered = [entry.seq]
                else:
                    self._pending_delivered.append(entry.seq)
        if consumer is not None:
            consumer.deliver(delivery)
        return delivery

    def peek(self, count: int) -> list[QueueEntry]:
        """The next ``count`` ready messages in delivery order, left in place (browsing)."""
        if self.recovering:
            self._recover_now()
        return self._ready.peek(count)

    def basic_get(self, no_ack: bool) -> Delivery | None:
        """Take the head message, or None when the queue has none ready (basic.get-empty)."""
        if self.recovering:
            self._recover_now()
        self.last_used_ms = self._clock.now_ms()
        self._expire_head(self.last_used_ms)
        if not self._ready.keys:
            self._commit_state()
            return None
        entry = self._ready.pop()
        delivery = self._hand_out(entry, None, no_ack, None)
        self._commit_state()
        return delivery

    async def fetch(self, no_ack: bool) -> Delivery | None:
        """:meth:`basic_get`, for queues whose ready messages may first have to be fetched
        (here: read from logs not open yet, or not read back since a crash)."""
        await self.recovered()
        await self.store.load()
        return self.basic_get(no_ack)

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
        self._ready.push(entry)

    def purge(self) -> int:
        """Drop every ready message (unacknowledged ones stay); returns how many."""
        if self.recovering:
            self._recover_now()
        ready = self._ready
        count = len(ready)
        while ready:
            self._remove_live(ready.pop())
        self._commit_state()
        return count

    # --------------------------------------------------------------------------- consumers

    async def admit(self, consumer: Consumer) -> None:
        """Make ``consumer`` known where the queue's consumers are kept before
        :meth:`add_consumer` (a queue of the cluster registers it; on one node, the queue's
        logs are opened if closed, and read back if a crash left them unread, so that
        deliveries read them without waiting)."""
        await self.recovered()
        await self.store.load()

    def add_consumer(self, consumer: Consumer, *, priority: int = 0) -> None:
        """Subscribe with a ``priority`` (higher is served first, see the module docstring);
        raises AccessRefusedError (403) against an exclusive consumer."""
        if self._consumers.refuses(consumer):
            raise AccessRefusedError(
                f"queue '{self.name}' in vhost '{self.vhost}' in exclusive use"
            )
        if self.recovering:
            self._recover_now()
        self._consumers.add(consumer, priority)
        self._had_consumer = True
        self.last_used_ms = self._clock.now_ms()
        self.dispatch()

    def remove_consumer(self, consumer: Consumer, *, requeue_unacked: bool = True) -> None:
        """Unsubscribe. With ``requeue_unacked`` (consumer or channel gone) its unacknowledged
        messages return to the queue, redelivered; basic.cancel passes False and the channel
        settles them later. An auto-delete queue is deleted when its last consumer leaves."""
        if not self._consumers.remove(consumer):
            return
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
        head_expiry = self._ready.head().expires_at if self._ready else None
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

    @property
    def timeless(self) -> bool:
        """Whether :meth:`tick` and :meth:`idle_expired` have nothing to do, now or later: no
        ready message that expires, no x-expires, no settlement pending (most idle queues,
        holding messages or not: delivery to consumers follows publishes, consumes and acks,
        not the timer)."""
        return (
            not self._ready.expiring
            and self.args.expires_ms is None
            and not self._pending_settle
            and not self._pending_delivered
        )

    def tick(self, now_ms: int) -> None:
        """Expire messages at the head and dispatch."""
        self._expire_head(now_ms)
        self._commit_state()
        self.dispatch()

    @property
    def needs_maintenance(self) -> bool:
        """Whether :meth:`maintain` has anything to do: something written or pending since the
        last run (an idle queue is skipped)."""
        return bool(self._pending_settle) or self.store.changed

    async def maintain(self) -> None:
        """Reclaim log space and compact the state log (run periodically)."""
        self.store.changed = False  # what this run writes (a move) marks it again
        self._commit_state()
        await self.store.write_now()
        moved_from = self._space.relocate()
        if moved_from:
            self._pending_settle = [*self._pending_settle, *moved_from]
            self._commit_state()
        self.store.reclaim(self._space.reclaim_offset())
        if self.store.needs_snapshot(len(self._entries) + len(self._space.settling)):
            await self.store.snapshot(self._space.kept_records())

    # --------------------------------------------------------------------------- internals

    def _add_live(self, entry: QueueEntry) -> None:
        self._entries[entry.seq] = entry
        self._space.added(entry)
        self._live_bytes += entry.size

    def _remove_live(self, entry: QueueEntry, *, settle: bool = True) -> None:
        del self._entries[entry.seq]
        self._space.removed(entry)
        self._live_bytes -= entry.size
        if settle:
            if self._pending_settle is NONE_PENDING:
                self._pending_settle = [entry.offset]
            else:
                self._pending_settle.append(entry.offset)
        if entry.held is not None:
            self._resident_bytes -= entry.size

    def _expire_head(self, now_ms: int) -> None:
        ready = self._ready
        if not ready.expiring:
            return
        while ready:
            head = ready.head()
            if head.expires_at is None or head.expires_at > now_ms:
                return
            ready.pop()
            self.expired += 1
            self._dead_letter_entry(head, DeathReason.EXPIRED)

    def _dead_letter_entry(self, entry: QueueEntry, reason: DeathReason) -> None:
        if self.args.dead_letter_exchange is None:
            self._remove_live(entry)
            return
        # The record stays unsettled in the log until the dead-lettered copies are on disk
        # (the virtual host settles it then): a crash in between keeps the message here.
        self._remove_live(entry, settle=False)
        self._space.hold(entry.offset, entry.seq, entry.delivery_count)
        self.dead_lettered += 1
        self._hooks.dead_letter(self, entry.message, reason, entry.offset)

    def settle(self, offsets: list[int]) -> None:
        """Record that the messages at ``offsets`` left the queue for good (see
        :meth:`QueueHooks.dead_letter`); nothing once the queue is deleted."""
        self._space.release(offsets)
        if not self.deleted:
            self.store.settle(offsets)
            self._hooks.queue_active(self)

    def _commit_state(self) -> None:
        self._hooks.queue_active(self)
        if self._pending_settle:
            self.store.settle(self._pending_settle)
            self._pending_settle = NONE_PENDING
        if self._pending_delivered:
            self.store.delivered(self._pending_delivered)
            self._pending_delivered = NONE_PENDING

    def detach(self) -> list[Consumer]:
        """Mark deleted and return the consumers (the virtual host cancels them)."""
        self.deleted = True
        consumers = self._consumers.clear()
        self._ready.clear()
        self._unacked.clear()
        self._entries.clear()
        return consumers
