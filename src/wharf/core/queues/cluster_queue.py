"""A queue of the cluster, as one node serves it: its local part holds only what this node
claimed.

How it works: the queue's messages are rows in the database (:mod:`wharf.cluster.queues.messages`).
A :class:`ClusterQueue` is the single-node :class:`~wharf.core.queues.queue.Queue` (its consumer
set, ready heap, hand-out and unacked bookkeeping are reused as they are) whose ready heap holds
only rows this node has *claimed* for its own consumers, on a memory store that keeps nothing:

* when its consumers have credit beyond what is claimed already (prefetch left, summed over the
  local consumers, plus a read-ahead for wide windows, at most :data:`CLAIM_BATCH` at a
  time; see :meth:`ClusterQueue._wanted`), it claims that many rows in one
  transaction (one claim in flight per queue), then dispatches them as the local queue would;
  a full batch is followed by another; otherwise the queue had no more, and it claims again
  only when woken (:meth:`ClusterQueue.wake`: a notification that the queue got messages,
  by a publish or release on any node) or at the next timer tick (a second at most), not on
  every ack;
* an ack, an auto-ack delivery, a reject without requeue and an expiry at the head *delete* the
  row (the last two dead-letter it, in the same transaction, when the queue has a dead-letter
  exchange; so does a claim meeting expired rows); a requeue and a consumer leaving with
  unacknowledged messages *release* it (redelivered, delivery count + 1), and claimed
  messages nobody took when the last consumer leaves are released unchanged. Both go through
  the node's settler, fenced on the epoch that claimed the row: a delivery claimed under an
  epoch since lost settles nothing, and comes back by the sweep.
  When the node's epoch changes (its lease was lost and it registered again), what it had
  claimed and not handed out is forgotten, not delivered: the sweep returns it to the queue.

``delivery_id`` is the row's ``seq`` (unique in the cluster). :attr:`message_count` is the
ready rows counted at the last declare plus the ones claimed here and not handed out;
:attr:`consumer_count` the other nodes' consumers counted then plus this node's.

Consumers are registered in the cluster (:mod:`wharf.cluster.queues.consumers`): :meth:`admit`
(awaited before consume-ok) writes the row, refused with 403 when exclusivity forbids it;
:meth:`add_consumer` then subscribes as on one node; :meth:`remove_consumer` removes the row
(the node's engine retries until it commits or the lease is gone). A consumer that goes while
its registration is in flight is removed once it lands. Under single-active-consumer the
database names the active consumer (registration order, across nodes); only that consumer, if
it is here, is served, claims carry its id and take nothing once it is no longer active, and a
node whose consumer is not active holds no claimed rows. Consumer priorities order a node's
own consumers, not single-active-consumer's choice. When the node's epoch changes, consumers
registered under the old one are cancelled (their rows went with the epoch). x-expires is the
sweep's, on the database's clock: no local timer deletes a queue here.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from wharf.core.clock import Clock
from wharf.core.config import BrokerConfig
from wharf.core.queues.args import QueueArgs
from wharf.core.queues.consumers import Consumer, Delivery
from wharf.core.queues.dead_letter import DeathReason
from wharf.core.queues.entry import QueueEntry
from wharf.core.queues.message import Message
from wharf.core.queues.queue import Queue, QueueHooks
from wharf.core.queues.records import stored_size
from wharf.core.queues.store import NONE_PENDING, memory_store
from wharf.errors import AccessRefusedError, StorageError

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from wharf.cluster.queues.consumers import Registration
    from wharf.cluster.queues.messages import ClaimedMessage

__all__ = [
    "CLAIM_BATCH",
    "READ_AHEAD_BYTES",
    "READ_AHEAD_FACTOR",
    "READ_AHEAD_FROM",
    "READ_AHEAD_MAX",
    "ClaimEngine",
    "ClusterQueue",
]

log = logging.getLogger(__name__)

CLAIM_BATCH = 4000
"""The most rows one claim takes."""

READ_AHEAD_FROM = 64
"""Unacknowledged deliveries of a queue on a node from which it claims ahead of credit."""

READ_AHEAD_FACTOR = 8
"""The read-ahead, in multiples of what the node's consumers hold unacknowledged."""

READ_AHEAD_MAX = 2 * CLAIM_BATCH
"""The most rows claimed ahead of credit. Claims start when half of it is wanted, so what is
ready then lasts while the next claim runs even when it is slow (a claim of 4,000 rows took
30-60 ms on a loaded two-core machine, where consumers took 50,000 messages a second)."""

READ_AHEAD_BYTES = 32 << 20
"""The most body bytes claimed ahead of credit, judged by the size of the rows claimed last:
large messages get a shorter read-ahead (credit itself is the consumers' to bound)."""

_SLICE = 250
"""Claimed rows handed out between two turns of the event loop."""


def _token() -> int:
    return secrets.randbits(63)


def _retrieve(task: asyncio.Future[None]) -> None:
    """A registration's failure when nobody waits for it any more (its consumer went)."""
    if not task.cancelled():
        task.exception()


class ClaimEngine(Protocol):
    """What a cluster queue asks of its node (the registry's engine)."""

    def epoch(self) -> int | None:
        """The node's current epoch (None while it holds no lease)."""
        ...

    async def claim(
        self, queue_id: int, count: int, token: int, *, dead_letters: bool = False,
        consumer: int | None = None,
    ) -> list[ClaimedMessage]:
        """Claim up to ``count`` rows, marked with ``token`` (a claim whose commit outcome is
        unknown is resolved by looking for it); ``dead_letters``: dead-letter the queue's
        expired rows first, in the same transaction; with ``consumer``, only while that
        registered consumer is the queue's active one."""
        ...

    async def register_consumer(
        self, queue_id: int, tag: str, *, exclusive: bool
    ) -> tuple[Registration | None, int]:
        """Register a consumer: its registration (None: refused by exclusivity) and the
        epoch it was made under."""
        ...

    def deregister_consumer(self, epoch: int, consumer_id: int) -> None:
        """Remove a registration (in the background, retried until done or fenced)."""
        ...

    async def touch(self, queue_id: int) -> None:
        """Mark the queue used now (x-expires)."""
        ...

    def delete(self, epoch: int, seqs: list[int]) -> None: ...

    def dead_letter(self, epoch: int, seqs: list[int], reason: str) -> None: ...

    def release(self, epoch: int, seqs: list[int], *, delivered: bool) -> None: ...

    def spawn(self, body: Coroutine[Any, Any, None]) -> None: ...


class ClusterQueue(Queue):
    """One queue of the cluster on this node; see the module docstring."""

    fetches_remotely: ClassVar[bool] = True

    def __init__(
        self,
        vhost: str,
        name: str,
        queue_id: int,
        *,
        durable: bool,
        auto_delete: bool,
        exclusive_owner: object | None,
        arguments: Mapping[str, Any],
        args: QueueArgs,
        config: BrokerConfig,
        clock: Clock,
        hooks: QueueHooks,
        engine: ClaimEngine,
    ) -> None:
        super().__init__(
            vhost,
            name,
            durable=durable,
            auto_delete=auto_delete,
            exclusive_owner=exclusive_owner,
            arguments=arguments,
            args=args,
            store=memory_store(config, clock),
            clock=clock,
            hooks=hooks,
            segment_bytes=config.queue_segment_bytes,
            resident_bytes=config.queue_resident_bytes,
        )
        self.queue_id = queue_id
        self._engine = engine
        self._epochs: dict[int, int] = {}  # seq -> the epoch that claimed it, for live entries
        self._claiming = False
        self._claim_again = False  # woken while a claim was in flight
        self._exhausted = False  # the last claim found no more ready rows; nothing woke it since
        self._row_bytes = 0  # the mean body size of the last claim's rows
        self._epoch = engine.epoch()  # the node's, when this queue last dispatched
        self.ready_in_db = 0
        """Unclaimed rows, as counted by the last declare."""
        self.consumers_elsewhere = 0
        """Other nodes' (and epochs') consumers, as counted by the last declare."""
        self.active_id: int | None = None
        """Single active consumer: the registration the cluster made active, as last learned."""
        self._registered: dict[Consumer, tuple[int, int]] = {}  # -> (registration id, epoch)
        self._admitting: set[Consumer] = set()
        self._abandoned: set[Consumer] = set()  # went while their registration was in flight
        self._dead_letters = args.dead_letter_exchange is not None

    # ----------------------------------------------------------------------------- gauges

    @property
    def message_count(self) -> int:
        return self.ready_in_db + len(self._ready)

    @property
    def consumer_count(self) -> int:
        return self.consumers_elsewhere + len(self._consumers)

    @property
    def consumed_here(self) -> bool:
        """Whether consumers on this node take from the queue."""
        return bool(self._consumers)

    @property
    def active_consumer(self) -> Consumer | None:
        if not self.args.single_active_consumer or self.active_id is None:
            return None
        for consumer, (registration, _) in self._registered.items():
            if registration == self.active_id and consumer in self._consumers:
                return consumer
        return None

    # ------------------------------------------------------------------- what a publish needs

    def row_priority(self, message: Message) -> int:
        cap = self.args.max_priority
        return 0 if cap is None else min(message.priority, cap)

    def row_ttl(self, message: Message) -> int | None:
        ttl = self.args.message_ttl_ms
        per_message = message.expiration_ms
        if per_message is not None:
            ttl = per_message if ttl is None else min(ttl, per_message)
        return ttl

    # ------------------------------------------------------------------------------ claims

    def dispatch(self) -> None:
        self._check_epoch()
        super().dispatch()
        self._claim_if_credit()

    def _check_epoch(self) -> None:
        epoch = self._engine.epoch()
        if epoch != self._epoch:
            self._epoch = epoch
            self._forget_stale()
            self._cancel_stale()

    def _forget_stale(self) -> None:
        """The node's lease changed: ready entries claimed under another epoch are not ours to
        hand out any more (the sweep returns them to the queue)."""
        ready = self._ready
        kept = []
        while ready:
            entry = ready.pop()
            if self._epochs.get(entry.seq) == self._epoch:
                kept.append(entry)
            else:
                self._epochs.pop(entry.seq, None)
                self._remove_live(entry, settle=False)
        for entry in kept:
            ready.push(entry)

    def _cancel_stale(self) -> None:
        """Consumers registered under another epoch lost their registration with it."""
        for consumer, (_, epoch) in list(self._registered.items()):
            if epoch != self._epoch and consumer in self._consumers:
                self.remove_consumer(consumer, requeue_unacked=False)
                consumer.cancelled(self)

    def _credit(self) -> int:
        if self.args.single_active_consumer:
            active = self.active_consumer
            return 0 if active is None else self._credit_of(active)
        total = 0
        for consumer in self._consumers.members_list:
            if not consumer.can_take():
                continue
            credit = getattr(consumer, "credit", None)
            total += CLAIM_BATCH if credit is None else int(credit())
            if total >= CLAIM_BATCH:
                return CLAIM_BATCH
        return total

    @staticmethod
    def _credit_of(consumer: Consumer) -> int:
        if not consumer.can_take():
            return 0
        credit = getattr(consumer, "credit", None)
        return CLAIM_BATCH if credit is None else min(int(credit()), CLAIM_BATCH)

    def _dispatch_round(self) -> None:
        if not self.args.single_active_consumer:
            super()._dispatch_round()
            return
        active = self.active_consumer
        while active is not None and self._has_ready() and active.can_take():
            if not self._offer(active):
                return

    def _wanted(self, coming: int = 0) -> int:
        """How many rows to claim now (``coming``: rows claimed and not yet taken): the
        consumers' free credit, plus a read-ahead of :data:`READ_AHEAD_FACTOR` times what they
        hold unacknowledged when that is at least :data:`READ_AHEAD_FROM` (their window is wide,
        so they want throughput: the next rows are here when acks free credit, instead of one
        claim's round trip later; at most :data:`READ_AHEAD_MAX` rows and, at the size of the
        rows claimed last, :data:`READ_AHEAD_BYTES`), minus what is claimed here and ready; at most
        :data:`CLAIM_BATCH`. While what is ready covers the credit, nothing is claimed until
        half the read-ahead is wanted: a claim costs about the same for 250 rows as for 1,000,
        and acks come in bursts. Consumers with a small window get no read-ahead, so a busy
        worker's node does not sit on messages an idle worker elsewhere could take."""
        if self.args.single_active_consumer and self.active_consumer is None:
            return 0
        held = len(self._unacked)
        ahead = 0
        if held >= READ_AHEAD_FROM:
            by_size = READ_AHEAD_BYTES // max(self._row_bytes, 1)
            ahead = min(READ_AHEAD_FACTOR * held, READ_AHEAD_MAX, by_size)
        credit, ready = self._credit(), len(self._ready) + coming
        if ready >= credit and credit + ahead - ready < ahead // 2:
            return 0
        return min(credit + ahead - ready, CLAIM_BATCH)

    def wake(self) -> None:
        """Ready rows may have come (a notification from the database, a timer tick, this
        node's consumer becoming the single active one): claim even if the last claim found
        none, or again once the one in flight is done."""
        self._exhausted = False
        if self._claiming:
            self._claim_again = True
        self.dispatch()

    def tick(self, now_ms: int) -> None:
        self._exhausted = False
        super().tick(now_ms)

    def _claim_if_credit(self) -> None:
        if self.deleted or self._claiming or self._exhausted or not self._consumers.members_list:
            return
        want = self._wanted()
        if want > 0:
            self._claiming = True
            self._engine.spawn(self._claim(want))

    async def _claim(self, want: int) -> None:
        """Claim until the consumers want no more or the queue has no more. After a full
        claim, the next one is sent before this one's rows are handed out (in slices, so
        that it goes out at once): the database works on it meanwhile. It starts after the
        first committed, so its rows come after the first's."""
        following: asyncio.Future[list[ClaimedMessage]] | None = None
        try:
            while want > 0 and not self.deleted:
                try:
                    if following is not None:
                        claimed, following = await following, None
                    else:
                        self._claim_again = False  # what is notified from now on: again
                        claimed = await self._claim_rows(want)
                except StorageError as exc:  # no lease yet, or the database: next tick
                    log.debug("claim on queue '%s' failed: %s", self.name, exc)
                    return
                full = len(claimed) >= want
                if claimed:
                    self._row_bytes = sum(len(row.body) for row in claimed) // len(claimed)
                if full and (after := self._wanted(coming=len(claimed))) > 0:
                    self._claim_again = False
                    following = asyncio.ensure_future(self._claim_rows(after))
                for start in range(0, len(claimed), _SLICE):
                    self._take_claimed(claimed[start : start + _SLICE])
                    super().dispatch()
                    if following is not None:
                        await asyncio.sleep(0)
                if following is not None:
                    want = after
                elif not full and not self._claim_again:
                    self._exhausted = True  # until woken: acks alone do not claim again
                    return
                else:
                    want = self._wanted()
        finally:
            self._claiming = False
            if following is not None:  # its rows must not stay claimed here unseen
                following.add_done_callback(self._take_late)

    async def _claim_rows(self, want: int) -> list[ClaimedMessage]:
        consumer = None
        if self.args.single_active_consumer:
            if self.active_consumer is None:
                return []  # only for the active consumer, and only while it is
            consumer = self.active_id
        return await self._engine.claim(
            self.queue_id, want, _token(), dead_letters=self._dead_letters, consumer=consumer
        )

    def _take_late(self, claimed: asyncio.Future[list[ClaimedMessage]]) -> None:
        """A claim sent ahead whose claiming loop ended first: its rows are taken, or given
        back if the queue or its consumers went meanwhile (:meth:`_take_claimed`)."""
        if claimed.cancelled() or claimed.exception() is not None:
            return
        self._take_claimed(claimed.result())
        super().dispatch()

    def _take_claimed(self, claimed: Iterable[ClaimedMessage], *, get: bool = False) -> None:
        """Put claimed rows in the local ready heap (or give them back if the queue is gone,
        or, unless they are for basic.get, if its consumers here left while the claim was in
        flight, or it has a single active consumer that is not here)."""
        rows = list(claimed)
        unserved = not self._consumers.members_list or (
            self.args.single_active_consumer and self.active_consumer is None
        )
        if self.deleted or (unserved and not get):
            for row in rows:
                self._engine.release(row.epoch, [row.seq], delivered=False)
            return
        cap = self.args.max_priority
        for row in rows:
            message = Message(row.exchange, row.routing_key, row.properties, row.body)
            entry = QueueEntry(
                row.seq,
                row.seq,
                message,
                0 if cap is None else min(row.priority, cap),
                row.expires_at,
                row.delivery_count,
                len(row.body),
                stored_size(message),
                False,
                self.store,
            )
            self._epochs[row.seq] = row.epoch
            self._add_live(entry)
            self._ready.push(entry)
            self.published += 1

    async def fetch(self, no_ack: bool) -> Delivery | None:
        """basic.get: the head of what is claimed here, else one row claimed for it."""
        self.last_used_ms = self._clock.now_ms()
        if self.args.expires_ms is not None:
            await self._engine.touch(self.queue_id)
        self._check_epoch()
        if not self._ready and not self.deleted:
            self._take_claimed(await self._engine.claim(
                self.queue_id, 1, _token(), dead_letters=self._dead_letters
            ), get=True)  # fmt: skip
        return self.basic_get(no_ack)

    # -------------------------------------------------------------------------- settlement

    def _commit_state(self) -> None:
        """Rows settled for good (ack, auto-ack, reject, expiry) are deleted in the database."""
        if self._pending_settle:
            settled, self._pending_settle = self._pending_settle, NONE_PENDING
            self._settle_rows(settled, self._engine.delete)
        self._pending_delivered = NONE_PENDING

    def _settle_rows(self, seqs: list[int], settle: Any) -> None:
        by_epoch: dict[int, list[int]] = {}
        for seq in seqs:
            epoch = self._epochs.pop(seq, None)
            if epoch is not None:
                by_epoch.setdefault(epoch, []).append(seq)
        for epoch, rows in by_epoch.items():
            settle(epoch, rows)

    def _dead_letter_entry(self, entry: QueueEntry, reason: DeathReason) -> None:
        """Rejected without requeue, or expired here before its hand-out: with a dead-letter
        exchange, the row is deleted and its copies inserted in one settle transaction."""
        if not self._dead_letters:
            super()._dead_letter_entry(entry, reason)
            return
        self._remove_live(entry, settle=False)
        self.dead_lettered += 1
        epoch = self._epochs.pop(entry.seq, None)
        if epoch is not None:
            self._engine.dead_letter(epoch, [entry.seq], reason.value)

    def _return(self, entry: QueueEntry) -> None:
        """A handed-out message comes back: release its row (redelivered) for any node."""
        self._remove_live(entry, settle=False)
        epoch = self._epochs.pop(entry.seq, None)
        if epoch is not None:
            self._engine.release(epoch, [entry.seq], delivered=True)

    def _unclaim_ready(self) -> None:
        """Give back what was claimed here and not handed out."""
        ready = self._ready
        while ready:
            entry = ready.pop()
            self._remove_live(entry, settle=False)
            epoch = self._epochs.pop(entry.seq, None)
            if epoch is not None:
                self._engine.release(epoch, [entry.seq], delivered=False)

    def purge(self) -> int:
        """Drop the ready messages claimed here (the vhost deletes the unclaimed rows)."""
        count = len(self._ready)
        super().purge()
        return count

    # --------------------------------------------------------------------------- consumers

    async def admit(self, consumer: Consumer) -> None:
        """Register ``consumer`` in the cluster before :meth:`add_consumer`; AccessRefusedError
        (403) while an exclusive consumer is registered anywhere, or when ``consumer`` is
        exclusive and any other is. The registration runs on when the caller is cancelled (its
        connection lost): the consumer's removal meanwhile removes it once it lands."""
        self._admitting.add(consumer)
        registering = asyncio.ensure_future(self._register(consumer))
        registering.add_done_callback(_retrieve)
        await asyncio.shield(registering)

    async def _register(self, consumer: Consumer) -> None:
        try:
            registration, epoch = await self._engine.register_consumer(
                self.queue_id, consumer.tag, exclusive=consumer.exclusive
            )
        finally:
            self._admitting.discard(consumer)
            abandoned = consumer in self._abandoned
            self._abandoned.discard(consumer)
        if registration is None:
            raise AccessRefusedError(
                f"queue '{self.name}' in vhost '{self.vhost}' in exclusive use"
            )
        if abandoned or self.deleted:
            self._engine.deregister_consumer(epoch, registration.id)
            return
        self._registered[consumer] = (registration.id, epoch)
        if registration.active:
            self.active_id = registration.id

    def add_consumer(self, consumer: Consumer, *, priority: int = 0) -> None:
        if self.deleted:  # deleted while the registration was made: cancelled at once
            self._registered.pop(consumer, None)
            consumer.cancelled(self)
            return
        super().add_consumer(consumer, priority=priority)

    def remove_consumer(self, consumer: Consumer, *, requeue_unacked: bool = True) -> None:
        if consumer in self._admitting:
            self._abandoned.add(consumer)
        registered = self._registered.pop(consumer, None)
        super().remove_consumer(consumer, requeue_unacked=requeue_unacked)
        if registered is not None:
            if registered[0] == self.active_id:
                self.active_id = None
            self._engine.deregister_consumer(registered[1], registered[0])
        if not self._consumers.members_list or (
            self.args.single_active_consumer and self.active_consumer is None
        ):
            self._unclaim_ready()

    def learn_active(self, consumer_id: int | None) -> None:
        """Single active consumer: the cluster's active registration is ``consumer_id``."""
        if consumer_id == self.active_id:
            return
        self.active_id = consumer_id
        if self.active_consumer is None:
            self._unclaim_ready()
        else:
            self.wake()

    # ------------------------------------------------------------------------------ timer

    def next_deadline(self) -> int | None:
        """Only the head's expiry: x-expires is the sweep's (on the database's clock)."""
        return self._ready.head().expires_at if self._ready else None

    def idle_expired(self, now_ms: int) -> bool:
        return False

    def release_all(self) -> None:
        """The node is closing: give back every claimed message, handed out or not."""
        self._unclaim_ready()
        for entry in list(self._unacked.values()):
            del self._unacked[entry.seq]
            entry.consumer = None
            self._return(entry)
