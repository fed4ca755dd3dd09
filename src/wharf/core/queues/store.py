"""A queue's messages and settlement state on storage logs.

Two logs per durable queue:

* the *message log*: one record per enqueued message. Key: the message's sequence number
  (u64, its stable place in the queue's FIFO order: the offset of its first record, so never
  reused). Value: the body. Record headers:
  ``e`` exchange, ``k`` routing key, ``p`` AMQP property bytes, ``x`` expiry time (u64 ms, only
  when a TTL applies), ``t`` (empty) for a transient message, which recovery skips.
* the *state log*: what happened to those records. Key ``A``: value is u64 offsets settled
  (acked, dead-lettered, expired, dropped, or moved to the tail). Key ``D``: u64 sequence
  numbers delivered once more (for the redelivered flag and delivery limits). Key ``S``: a
  snapshot, u64 boundary then (u64 offset, u64 seq, u32 delivery count) per live record; every
  offset below the boundary that the snapshot does not list is settled.

How it works: appends are not written one by one. Message records go into a pending batch
(:class:`~wharf.core.queues.records.BatchBuilder`) and settlements and deliveries into pending
lists; a ``call_soon`` callback writes them when the event-loop iteration that produced them
is over, so one iteration's publishes are one batch, one write and one fsync. Anything that
needs the log up to date (a durability wait on a pending record, a read, maintenance, close)
writes the pending batch first. :meth:`QueueStore.read_message` reads back bodies that the
queue does not keep in memory, keeping the last decoded run of batches for the next reads.

Recovery replays the state log (from its last snapshot on) and then reads the
message log from its start, keeping the records not settled. If a record was re-appended at the
tail (to free old segments) and the crash came before the old offset was settled, both copies
carry the same sequence number and the later one wins. The state log is compacted by writing a
snapshot and deleting the records before it. A non-durable queue uses a memory log and keeps no
state log. Durability waits go through the message log's :class:`GroupCommitter`.

Nothing here fsyncs on the event-loop thread: :func:`open_store` opens the logs on the
broker's fsync pool, and the group committers (given the same pool) run every flush, the
snapshot that recovery may have to write, and closing or deleting the logs.

A durable queue that has never held a message has no logs: its directory is made by its first
write, not by its declare (the definitions journal is what makes a declare durable). Until then
the store stands on empty placeholders and creates nothing, so declaring thousands of queues
costs no files, no descriptors and no flushers; the first write opens the logs on the fsync
pool while the records wait in memory (still readable there), and a publisher's confirm waits
for that open like for any write.

A store whose logs exist can also stand *closed*: after a clean stop the queue's live
entries come from the stop's summary (:class:`StoreSummary`, saved by the virtual hosts'
registry) and no log is opened at start; and an idle store's logs are closed to bound the
broker's open files (:meth:`QueueStore.unload`). A closed store writes like a new one (its
records wait in memory while the logs open on the fsync pool); a read of a record not in
memory, which cannot wait, opens them at once on the event-loop thread, after a clean close
without any write or fsync (or takes the result of the open or close already under way on the
pool). Callers that can wait open the logs first with :meth:`QueueStore.load`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import struct
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Protocol, TypeVar

import msgspec

from wharf.core.clock import Clock
from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.durability import GroupCommitter, run_off_loop, submit_off_loop
from wharf.core.queues.message import Message
from wharf.core.queues.records import (
    BatchBuilder,
    DecodedMessage,
    decode_messages,
    stored_size,
)
from wharf.core.stats import HistogramFamily
from wharf.errors import PreconditionError, StorageError
from wharf.storage.checkpoint import fsync_dir
from wharf.storage.interface import LogLike
from wharf.storage.log import Log, LogConfig, remove_log_dir
from wharf.storage.memory_log import MemoryLog
from wharf.storage.record_batch import Record, RecordInput, decode_records, iter_batches

__all__ = [
    "MAX_MESSAGE_BYTES",
    "NONE_PENDING",
    "QueueStore",
    "ReadBack",
    "StoreSummary",
    "StoredMessage",
    "holds_logs",
    "memory_store",
    "open_store",
]

log = logging.getLogger(__name__)

_U64 = struct.Struct(">Q")
_SNAP_ENTRY = struct.Struct(">QQI")
_READ_CHUNK = 1 << 20
# Message reads fetch this much from the log at once (the batch holding the offset and more).
_READ_AHEAD_BYTES = 256 << 10
# A pending message batch is written once it reaches this size.
_MAX_PENDING_BYTES = 512 << 10
# The largest body a queue takes (RabbitMQ's default max_message_size), and room for the rest
# of its record (properties, exchange, routing key, framing) in a batch of its own.
MAX_MESSAGE_BYTES = 128 << 20
_RECORD_ROOM = 1 << 20
# Compact the state log after this many settlements and deliveries since the last snapshot, or
# after as many as the records the snapshot would hold, when more (see needs_snapshot).
_SNAPSHOT_EVERY = 20_000


@dataclass(slots=True)
class StoredMessage:
    """A live record found by recovery (``message`` None when bodies were not asked for)."""

    offset: int
    seq: int
    message: Message | None
    expires_at: int | None
    delivery_count: int
    priority: int = 0
    size: int = 0
    stored: int = 0


class StoreSummary(msgspec.Struct, array_like=True, frozen=True):
    """What a closed store's logs hold, as far as the queue needs before reading them: the
    message log's end and size, and the settlements recorded since the state log's last
    snapshot."""

    next_offset: int
    size_bytes: int
    since_snapshot: int


@dataclass(frozen=True, slots=True)
class ReadBack:
    """What a queue's logs held, read back (and the logs closed again) on the fsync pool."""

    summary: StoreSummary
    live: list[StoredMessage]


def _pack_u64s(values: Sequence[int]) -> bytes:
    return struct.pack(f">{len(values)}Q", *values)


def _unpack_u64s(raw: bytes | None) -> tuple[int, ...]:
    if not raw:
        return ()
    return struct.unpack(f">{len(raw) // 8}Q", raw[: len(raw) // 8 * 8])


class _HasOffset(Protocol):
    @property
    def offset(self) -> int: ...


_Item = TypeVar("_Item", bound=_HasOffset)
_T = TypeVar("_T")


def _iter_log(log: LogLike, decode: Callable[[memoryview], list[_Item]]) -> Iterator[_Item]:
    """Every item ``decode`` finds in ``log``'s batches, from its start to its end, in offset
    order (a chunk that starts inside a batch skips the records before the asked offset)."""
    offset = log.log_start_offset
    end = log.next_offset
    while offset < end:
        chunk = log.read(offset, _READ_CHUNK)
        if not chunk:
            return
        last = offset
        for pos, header in iter_batches(chunk, max_batch_bytes=max(len(chunk), 61)):
            for item in decode(memoryview(chunk)[pos : pos + header.size]):
                if item.offset >= offset:
                    yield item
                last = max(last, item.offset)
        if last < offset:
            return
        offset = last + 1


def iter_messages(log: LogLike) -> Iterator[DecodedMessage]:
    """Every message record of a queue's message log, in offset order."""
    return _iter_log(log, decode_messages)


def iter_records(log: LogLike) -> Iterator[Record]:
    """Every record of ``log``, in offset order."""
    return _iter_log(log, decode_records)


@dataclass(frozen=True, slots=True)
class _OpenLogs:
    messages: Log
    state: Log
    committer: GroupCommitter
    state_committer: GroupCommitter


@dataclass(frozen=True, slots=True)
class _LogOpener:
    """Opens (creating) a durable queue's logs in the directory ``path``: on the fsync pool,
    or at once without a loop."""

    path: str  # (a string: tens of thousands are held, a Path weighs twice as much)
    log_config: LogConfig
    config: BrokerConfig
    clock: Clock
    fsync_latency: HistogramFamily[str] | None
    executor: Executor | None

    async def open(self) -> _OpenLogs:
        return await run_off_loop(self.executor, self.open_now)

    def open_now(self) -> _OpenLogs:
        messages, state = self.open_logs()
        fsync = self.config.fsync
        # Settlements are never waited on; they reach the disk on this interval and at close.
        state_fsync = FsyncPolicy.INTERVAL if fsync is not FsyncPolicy.NEVER else FsyncPolicy.NEVER
        committer = self._committer(messages, fsync, "queue")
        state_committer = self._committer(state, state_fsync, "queue-state")
        return _OpenLogs(messages, state, committer, state_committer)

    def open_logs(self) -> tuple[Log, Log]:
        """The message and state logs, opened (so recovered) on this thread, without their
        group committers."""
        clock_ms = self.clock.now_ms
        messages = Log.open(os.path.join(self.path, "messages"), self.log_config,
                            clock_ms=clock_ms)  # fmt: skip
        try:
            state = Log.open(os.path.join(self.path, "state"), self.log_config, clock_ms=clock_ms)
        except BaseException:
            messages.close()
            raise
        return messages, state

    def _committer(self, log: Log, fsync: FsyncPolicy, kind: str) -> GroupCommitter:
        return GroupCommitter(
            log,
            fsync,
            interval_ms=self.config.fsync_interval_ms,
            durable_offset=log.next_offset,
            executor=self.executor,
            kind=kind,
            fsync_latency=self.fsync_latency,
            clock=self.clock,
        )


# The settlements and deliveries of a store with none pending (shared, never changed: the
# first one pending replaces it).
NONE_PENDING: list[int] = []

# The cache of a store that has read nothing since it was last emptied (never changed: the
# cache is replaced whole).
_NO_CACHE: dict[int, DecodedMessage] = {}

# What a store whose logs are not made yet stands on, for its messages and its state: empty,
# and closed, so that anything but reading its (empty) positions raises.
_NOTHING_YET = MemoryLog()
_NOTHING_YET.close()


class QueueStore:
    """The logs of one queue; see the module docstring for the record layout.

    ``opener``: how a durable queue's logs are opened (or created) in their directory; without
    ``committer`` they are not open yet (``messages`` and ``state`` are then empty
    placeholders) and open at the first write or read. ``closed``: what those logs hold when
    they exist but are not open (None: they do not exist yet)."""

    # Slots, and containers made at first use: a broker holds tens of thousands of stores.
    __slots__ = (
        "_batch",
        "_batch_limit",
        "_cache",
        "_cache_range",
        "_close_job",
        "_committer",
        "_delivered",
        "_destroyed",
        "_full_batches",
        "_next",
        "_on_disk",
        "_open_job",
        "_opener",
        "_opening",
        "_scheduled",
        "_settle",
        "_since_snapshot",
        "_spec",
        "_started",
        "_state_committer",
        "_unwritten",
        "batches_written",
        "changed",
        "messages",
        "on_open",
        "owner",
        "state",
        "used",
    )

    def __init__(
        self,
        messages: LogLike,
        state: LogLike | None,
        committer: GroupCommitter | None,
        state_committer: GroupCommitter | None = None,
        *,
        max_batch_bytes: int = _MAX_PENDING_BYTES,
        opener: _LogOpener | None = None,
        closed: StoreSummary | None = None,
    ) -> None:
        self.messages = messages
        self.state = state
        self._committer = committer
        self._state_committer = state_committer
        self._spec = opener
        self._opener = opener if committer is None else None  # set while the logs are not open
        self._on_disk = closed  # what the logs hold while they exist but are not open
        self._opening: asyncio.Future[None] | None = None
        # the open and the close under way on the fsync pool (a read that cannot wait
        # takes their outcome on the loop's thread)
        self._open_job: concurrent.futures.Future[_OpenLogs] | None = None
        self._close_job: concurrent.futures.Future[None] | None = None
        # called with this store when the logs open (the registry counts open stores; one
        # callback shared by a vhost's stores, ``owner`` saying whose store this is);
        # ``used``: touched since the registry last looked (a second chance before closing)
        self.on_open: Callable[[QueueStore], None] | None = None
        self.owner: object = None
        self.used = False
        self._started = False
        self._destroyed = False
        # while the logs are not open: batches that filled up, and each message by offset
        self._full_batches: list[tuple[bytearray, int]] | None = None
        self._unwritten: dict[int, Message] | None = None
        self._since_snapshot = 0 if closed is None else closed.since_snapshot
        self._batch: BatchBuilder | None = None  # made by the first append
        self._batch_limit = min(_MAX_PENDING_BYTES, max_batch_bytes)
        self._next = messages.next_offset if closed is None else closed.next_offset
        self._settle = NONE_PENDING
        self._delivered = NONE_PENDING
        self._scheduled = False
        self._cache = _NO_CACHE
        self._cache_range = (0, 0)
        self.batches_written = 0  # message batches appended, for benchmarks and metrics
        # set by every append, settlement and delivery; cleared by the queue's maintenance
        self.changed = False

    def start(self) -> None:
        """Start the periodic flushers (needs a running event loop; the flushers of logs not
        open yet start when they open)."""
        self._started = True
        if self._committer is not None:
            self._committer.start()
        if self._state_committer is not None:
            self._state_committer.start()

    @property
    def durable(self) -> bool:
        return self.state is not None

    @property
    def next_offset(self) -> int:
        """The offset the next appended message gets (the log's end plus what is pending)."""
        return self._next

    @property
    def path(self) -> Path | None:
        """The directory of a durable queue's logs (removed with them)."""
        return None if self._spec is None else Path(self._spec.path)

    @property
    def size_bytes(self) -> int:
        """Bytes of the message log (as closed, while it is not open)."""
        closed = self._on_disk
        return self.messages.size_bytes if closed is None else closed.size_bytes

    @property
    def cold(self) -> bool:
        """Whether the logs hold records but are not open: a read would open them at once on
        the event loop's thread; :meth:`load` opens them on the fsync pool first."""
        return self._on_disk is not None

    @property
    def loaded(self) -> bool:
        """Whether the logs of a durable store are open."""
        return self._spec is not None and self._opener is None and not self._destroyed

    def summary(self) -> StoreSummary | None:
        """What the logs hold, for a restart that opens none (None: no logs, or not all of it
        is written and flushed)."""
        if self._on_disk is not None:
            return None if self._pending() else self._on_disk
        return self._summary_now() if self.idle else None

    def _summary_now(self) -> StoreSummary:
        return StoreSummary(self._next, self.messages.size_bytes, self._since_snapshot)

    @property
    def idle(self) -> bool:
        """Open logs with nothing pending, unflushed or being flushed: closing them writes
        nothing the queue waits for."""
        committers = (self._committer, self._state_committer)
        if self._opener is not None or self._destroyed or self._scheduled or self._pending():
            return False
        for log_, committer in zip((self.messages, self.state), committers, strict=True):
            if committer is None or log_ is None or not committer.idle:
                return False
            if committer.policy is not FsyncPolicy.NEVER and (
                log_.next_offset > committer.durable_offset
            ):
                return False
        return True

    # ------------------------------------------------------------------------ writing

    def append(
        self, seq: int, message: Message, expires_at: int | None, now_ms: int, *, keep: bool
    ) -> int:
        """Add one message to the pending batch; ``keep`` = survive a restart. Returns its
        offset. The batch is written at the end of this event-loop iteration (at once when
        no loop runs, or when it is full); a write error from a full batch is raised here,
        before the message is taken, and so is PreconditionError for a body above
        :data:`MAX_MESSAGE_BYTES`."""
        size = len(message.body)
        if size > MAX_MESSAGE_BYTES:
            raise PreconditionError(
                f"message size {size} is larger than the maximum {MAX_MESSAGE_BYTES}"
            )
        batch = self._batch
        if batch is None:
            batch = self._batch = BatchBuilder()
        if batch.count and batch.size + size + len(message.properties) + 600 > self._batch_limit:
            if self._opener is None:
                self.write_pending()
            else:
                count = batch.count
                if self._full_batches is None:
                    self._full_batches = []
                self._full_batches.append((batch.finish(), count))
        batch.add(seq, message, expires_at, now_ms, keep)
        offset = self._next
        self._next = offset + 1
        if self._opener is not None:
            if self._unwritten is None:
                self._unwritten = {}
            self._unwritten[offset] = message
        self.changed = True
        self.used = True
        self._schedule()
        return offset

    def settle(self, offsets: Sequence[int]) -> None:
        """Record settled offsets (written with the next batch; never waited on)."""
        if offsets:
            self.changed = True  # space to reclaim, on disk or in memory
        if self.state is not None and offsets:
            if self._settle is NONE_PENDING:
                self._settle = list(offsets)
            else:
                self._settle.extend(offsets)
            self._schedule()

    def delivered(self, seqs: Sequence[int]) -> None:
        """Record sequence numbers delivered once more (written with the next batch)."""
        if self.state is not None and seqs:
            if self._delivered is NONE_PENDING:
                self._delivered = list(seqs)
            else:
                self._delivered.extend(seqs)
            self.changed = True
            self._schedule()

    def _schedule(self) -> None:
        if self._scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.write_pending()
            return
        self._scheduled = True
        loop.call_soon(self._write_scheduled)

    def _write_scheduled(self) -> None:
        self._scheduled = False
        try:
            self.write_pending()
        except StorageError as exc:
            # Kept pending with their offsets; retried by the next write. Waiters for them
            # get the error (their publishers are nacked).
            log.error("queue log write failed, will retry: %s", exc)

    def write_pending(self) -> None:
        """Append the pending message batch and state records now (raises StorageError); with
        the logs not open yet, start opening them (the open writes what is pending)."""
        if self._opener is not None:
            if self._pending():
                self._start_open()
            return
        while self._full_batches:
            data, count = self._full_batches[0]
            self.messages.append(data)
            del self._full_batches[0]
            self.batches_written += 1
        batch = self._batch
        if batch is not None and batch.count:
            count = batch.count
            data = batch.finish()
            try:
                self.messages.append(data)
            except StorageError:
                batch.restore(data, count)
                raise
            self.batches_written += 1
        if self._committer is not None:
            self._committer.written()
        if self.state is not None and (self._settle or self._delivered):
            records: list[RecordInput] = []
            if self._settle:
                records.append(RecordInput(b"A", _pack_u64s(self._settle)))
            if self._delivered:
                records.append(RecordInput(b"D", _pack_u64s(self._delivered)))
            self.state.append_records(records)
            self._since_snapshot += len(self._settle) + len(self._delivered)
            self._settle = NONE_PENDING
            self._delivered = NONE_PENDING
            if self._state_committer is not None:
                self._state_committer.written()

    def _pending(self) -> bool:
        batch = self._batch
        return bool(
            (batch is not None and batch.count)
            or self._full_batches
            or self._settle
            or self._delivered
        )

    def _start_open(self) -> None:
        if self._opening is not None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:  # no loop to keep responsive: at once
            self._open_at_once()
            return
        self._opening = asyncio.ensure_future(self._open())
        self._opening.add_done_callback(_log_open_failure)

    async def _open(self) -> None:
        """Open (or create) the logs on the fsync pool, after a close under way, then write
        what waited for them."""
        try:
            closing = self._close_job
            if closing is not None:
                with contextlib.suppress(Exception):  # logged by the close; the open recovers
                    await asyncio.wrap_future(closing)
            if self._opener is None:
                return  # a read opened them meanwhile
            job = self._open_job = submit_off_loop(self._opener.executor, self._opener.open_now)
            logs = await asyncio.wrap_future(job)
        finally:
            self._opening = None  # after a failure, the next write tries again
            self._open_job = None
        if self._opener is not None:  # else a read took this open's logs already
            self._opened(logs)

    def _open_at_once(self) -> None:
        """Open the logs on this thread: a read that cannot wait (see the module docstring)
        takes the outcome of the close and the open under way, or opens them itself."""
        assert self._opener is not None
        closing = self._close_job
        if closing is not None:
            with contextlib.suppress(Exception):
                closing.result()
        job = self._open_job
        self._opened(job.result() if job is not None else self._opener.open_now())

    def _opened(self, logs: _OpenLogs) -> None:
        closed = self._on_disk
        if closed is not None and logs.messages.next_offset != closed.next_offset:
            logs.messages.close()
            logs.state.close()
            where = self._spec.path if self._spec is not None else "memory"
            raise StorageError(
                f"the message log in {where} ends at {logs.messages.next_offset}, "
                f"not at {closed.next_offset} as when it was closed"
            )
        self.messages, self.state = logs.messages, logs.state
        self._committer, self._state_committer = logs.committer, logs.state_committer
        self._opener = None
        self._on_disk = None
        self._unwritten = None
        self.used = True
        if self._started:
            self.start()
        if self.on_open is not None:
            self.on_open(self)
        self._write_scheduled()  # a write that fails here is retried as any other

    async def load(self) -> None:
        """Open logs that hold records (:attr:`cold`) on the fsync pool, so that reading them
        does not open them on the event loop's thread."""
        if self._on_disk is not None and not self._destroyed:
            await self._ensure_open()

    async def open_logs(self) -> None:
        """Open the logs on the fsync pool now (creating them if they do not exist)."""
        await self._ensure_open()

    async def unload(self) -> bool:
        """Close the logs of an :attr:`idle` store (bounding open files); the store keeps
        working and opens them again when needed. Returns whether it closed them."""
        if not self.idle or self._spec is None:
            return False
        messages, state = self.messages, self.state
        committers = (self._committer, self._state_committer)
        assert state is not None
        self._on_disk = self._summary_now()
        self.messages = self.state = _NOTHING_YET
        self._committer = self._state_committer = None
        self._opener = self._spec
        self._cache = _NO_CACHE
        self._cache_range = (0, 0)
        job = self._close_job = submit_off_loop(
            self._spec.executor, partial(_close_both, messages, state)
        )
        try:
            for committer in committers:
                if committer is not None:
                    await committer.close()  # idle: it only stops its sleeping ticker
            await asyncio.wrap_future(job)
        except StorageError as exc:
            log.error("closing the logs in %s failed (the next open recovers them): %s",
                      self._spec.path, exc)
        finally:
            if self._close_job is job:
                self._close_job = None
        return True

    async def _ensure_open(self) -> None:
        """Return once the logs are open (raises StorageError when they could not be)."""
        if self._opener is None:
            return
        self._start_open()
        assert self._opening is not None
        await asyncio.shield(self._opening)

    async def wait_durable(self, offset: int) -> None:
        """Return once the record at ``offset`` is on disk (per the fsync policy); raises
        StorageError when it could not be written."""
        if self._opener is not None:
            await self._ensure_open()
        if self._committer is None or self._destroyed:
            return  # in memory, or gone with its queue
        if offset >= self.messages.next_offset:
            self.write_pending()  # a batch whose write failed is tried again here
        await self._committer.wait_durable(offset + 1)

    # ------------------------------------------------------------------------ reading

    def read_message(self, offset: int) -> Message:
        """The message stored at ``offset`` (bodies not kept in memory are read back here).

        The batches read are kept until an offset outside them is asked for: deliveries go
        mostly in log order, so one read serves a run of them."""
        self.used = True
        if self._opener is not None:  # the logs are not open: maybe the message is here
            unwritten = None if self._unwritten is None else self._unwritten.get(offset)
            if unwritten is not None:
                return unwritten
            if self._on_disk is None:
                raise StorageError(f"no message record at offset {offset} of a new queue")
            self._open_at_once()
        low, high = self._cache_range
        if not low <= offset < high:
            if offset >= self.messages.next_offset:
                self.write_pending()
            chunk = self.messages.read(offset, _READ_AHEAD_BYTES)
            cache: dict[int, DecodedMessage] = {}
            for pos, header in iter_batches(chunk, max_batch_bytes=max(len(chunk), 61)):
                for item in decode_messages(memoryview(chunk)[pos : pos + header.size]):
                    cache[item.offset] = item
            self._cache = cache
            self._cache_range = (min(cache, default=offset), max(cache, default=offset) + 1)
        found = self._cache.get(offset)
        if found is None:
            raise StorageError(f"no message record at offset {offset} of {self.messages}")
        return found.message

    # ---------------------------------------------------------------------- compaction

    def needs_snapshot(self, kept: int) -> bool:
        """Whether to compact the state log, whose snapshot would hold ``kept`` records: a
        snapshot writes them all, so it waits for at least as many changes, which keeps the
        work linear in the changes (draining a queue of a million messages would otherwise
        write its remaining records again every 20,000 changes) and the state log under twice
        the larger of the two."""
        return self.state is not None and self._since_snapshot >= max(_SNAPSHOT_EVERY, kept)

    async def snapshot(self, live: Sequence[tuple[int, int, int]]) -> None:
        """Compact the state log: ``live`` = (offset, seq, delivery count) of every live record.

        The snapshot is made durable before the records it replaces are deleted."""
        if self.state is None:
            return
        await self._ensure_open()
        self._settle = NONE_PENDING  # the snapshot says it all
        self._delivered = NONE_PENDING
        self.write_pending()
        value = _U64.pack(self._next) + b"".join(_SNAP_ENTRY.pack(o, s, c) for o, s, c in live)
        at = self.state.next_offset
        self.state.append_records([RecordInput(b"S", value)])
        if self._state_committer is not None:
            await self._state_committer.flush_now()
        self.state.delete_records_before(at)
        self._since_snapshot = 0

    def reclaim(self, first_live_offset: int) -> None:
        """Let the message log drop everything before ``first_live_offset``."""
        self.write_pending()
        first = min(first_live_offset, self.messages.next_offset)
        if first > self.messages.log_start_offset:
            self.messages.delete_records_before(first)
            self._cache = _NO_CACHE
            self._cache_range = (0, 0)

    async def recover(self, *, keep_bodies: bool = True) -> list[StoredMessage]:
        """Live records in offset order; duplicates of a moved record are settled here.

        Without ``keep_bodies`` the messages are not returned (``message`` None), so a deep
        queue is recovered without holding its bodies in memory."""
        live, stale, duplicates = self._read_back(keep_bodies)
        if stale:
            await self._snapshot_now(self._next, live)
        else:
            self.settle(duplicates)
        return live

    def recover_now(self) -> list[StoredMessage]:
        """:meth:`recover` without bodies and without awaiting: for a queue that a restart
        after a crash left to recover at its first use (see :mod:`wharf.core.queues.vhost`).
        Logs not open yet are opened on this thread (or the open under way on the pool is
        waited for), and so is the rare snapshot that a lost tail asks for."""
        if self._opener is not None:
            self._open_at_once()
        live, stale, duplicates = self._read_back(False)
        if stale:
            assert self.state is not None
            _replace_by_snapshot(self.state, self._next, live)
            self._since_snapshot = 0
        else:
            self.settle(duplicates)
        return live

    def _read_back(self, keep_bodies: bool) -> tuple[list[StoredMessage], bool, list[int]]:
        """:func:`_read_back_logs` of this store's open logs, whose end is the next offset."""
        self._next = self.messages.next_offset
        return _read_back_logs(self.messages, self.state, keep_bodies)

    def read_back_closed(self) -> ReadBack:
        """On the fsync pool, for a store whose logs a crash left and that has not opened
        them (see :meth:`Queue.begin_recovery <wharf.core.queues.queue.Queue.begin_recovery>`):
        open them, read back what they hold, settle duplicates or write the snapshot a lost
        tail asks for, and close them again, so that the store stands on the result as after
        a clean stop (:meth:`take_read_back`). Touches nothing but those logs."""
        assert self._spec is not None
        messages, state = self._spec.open_logs()
        try:
            live, stale, duplicates = _read_back_logs(messages, state, False)
            end = messages.next_offset
            if stale:
                _replace_by_snapshot(state, end, live)
            elif duplicates:
                state.append_records([RecordInput(b"A", _pack_u64s(duplicates))])
                state.flush()
            summary = StoreSummary(end, messages.size_bytes, 0 if stale else len(duplicates))
        finally:
            _close_both(messages, state)
        return ReadBack(summary, live)

    def take_read_back(self, summary: StoreSummary) -> None:
        """Stand closed on what :meth:`read_back_closed` found (its logs never opened here)."""
        assert self._opener is not None and self._on_disk is None and not self._pending()
        self._on_disk = summary
        self._next = summary.next_offset
        self._since_snapshot = summary.since_snapshot

    @property
    def untouched(self) -> bool:
        """Whether the logs were never opened here and no open is under way."""
        return self._opener is not None and self._opening is None and self._on_disk is None

    async def _snapshot_now(self, boundary: int, live: Sequence[StoredMessage]) -> None:
        """Write a durable snapshot (at open, before the queue takes anything)."""
        assert self.state is not None and self._state_committer is not None
        at = self.state.next_offset
        self.state.append_records([RecordInput(b"S", _snapshot_value(boundary, live))])
        await self._state_committer.flush_now()
        self.state.delete_records_before(at)
        self._since_snapshot = 0

    # ----------------------------------------------------------------------- lifecycle

    async def write_now(self) -> None:
        """:meth:`write_pending`, opening the logs first if something waits for them."""
        if self._opener is not None:
            if not self._pending() and self._opening is None:
                return  # nothing was ever written: nothing to create
            await self._ensure_open()
        self.write_pending()

    async def flush(self) -> None:
        """Make everything written so far durable (clean shutdown)."""
        await self.write_now()
        if self._committer is not None:
            await self._committer.flush_now()
        if self._state_committer is not None:
            await self._state_committer.flush_now()

    async def destroy(self) -> None:
        """Close and delete the logs (queue deleted)."""
        self._destroyed = True
        self.owner = None  # the queue, which holds this store: no cycle is left
        if self._opening is not None:
            await asyncio.wait([self._opening])  # it writes what waited: its waiters finish
        self._batch = None
        self._full_batches = None
        self._unwritten = None
        self._settle = NONE_PENDING
        self._delivered = NONE_PENDING
        if self._opener is not None:
            if self._on_disk is not None:  # closed logs: removed without opening them
                await self._remove_closed()
            return  # else no log was made (or making one failed: a later declare recovers it)
        await self._close_committers()
        await self._off_loop(self.messages.delete)
        if self.state is not None:
            await self._off_loop(self.state.delete)
        if self._spec is not None:
            await self._off_loop(partial(_remove_empty_dir, self._spec.path))

    async def _remove_closed(self) -> None:
        assert self._spec is not None
        closing = self._close_job
        if closing is not None:
            with contextlib.suppress(Exception):
                await asyncio.wrap_future(closing)
        path = self._spec.path
        self._on_disk = None

        def remove() -> None:
            remove_log_dir(os.path.join(path, "messages"), sync=False)
            remove_log_dir(os.path.join(path, "state"), sync=False)
            _remove_empty_dir(path)

        await run_off_loop(self._spec.executor, remove)

    async def _close_committers(self) -> None:
        if self._committer is not None:
            await self._committer.close()
        if self._state_committer is not None:
            await self._state_committer.close()

    async def close(self) -> None:
        await self.flush()
        if self._opener is not None:  # never opened, or closed already
            closing = self._close_job
            if closing is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wrap_future(closing)
            return
        await self._close_committers()
        await self._off_loop(self.messages.close)
        if self.state is not None:
            await self._off_loop(self.state.close)

    async def _off_loop(self, call: Callable[[], None]) -> None:
        """Closing or deleting a disk log fsyncs: on the fsync pool, through the committer
        (a memory log, without one, has nothing to wait for)."""
        if self._committer is None:
            call()
        else:
            await self._committer.run(call)


@lru_cache(maxsize=8)
def _log_config(segment_bytes: int) -> LogConfig:
    # Queue logs are never trimmed by time or size retention: only settlement frees space.
    return LogConfig(
        segment_bytes=segment_bytes,
        retention_ms=None,
        retention_bytes=None,
        max_batch_bytes=MAX_MESSAGE_BYTES + _RECORD_ROOM,
    )


def memory_store(config: BrokerConfig, clock: Clock) -> QueueStore:
    """A store in memory (a transient or exclusive queue)."""
    log_config = _log_config(config.queue_segment_bytes)
    return QueueStore(
        MemoryLog(log_config, clock_ms=clock.now_ms),
        None,
        None,
        max_batch_bytes=_batch_limit(log_config),
    )


async def open_store(
    path: str | os.PathLike[str],
    config: BrokerConfig,
    clock: Clock,
    fsync_latency: HistogramFamily[str] | None = None,
    executor: Executor | None = None,
    *,
    new: bool = False,
) -> QueueStore:
    """The durable store in directory ``path`` (created at its first write if absent;
    :meth:`QueueStore.recover` reads back what it holds). ``new``: the caller knows ``path``
    holds no logs (a restart's listing of the queue directories), so the disk is not asked.

    ``fsync_latency``: the broker's fsync histograms, which the logs' group commits record into;
    ``executor``: the broker's fsync pool, which opens the logs (creating a log fsyncs its
    directory) and runs their group commits (the loop's default pool when None).
    """
    log_config = _log_config(config.queue_segment_bytes)
    opener = _LogOpener(os.fspath(path), log_config, config, clock, fsync_latency, executor)
    limit = _batch_limit(log_config)
    if new or not holds_logs(opener.path):  # never held a message: its logs wait for one
        return QueueStore(_NOTHING_YET, _NOTHING_YET, None, max_batch_bytes=limit, opener=opener)
    logs = await opener.open()
    return QueueStore(
        logs.messages,
        logs.state,
        logs.committer,
        logs.state_committer,
        max_batch_bytes=limit,
        opener=opener,
    )


def closed_store(
    path: str | os.PathLike[str],
    summary: StoreSummary,
    config: BrokerConfig,
    clock: Clock,
    fsync_latency: HistogramFamily[str] | None = None,
    executor: Executor | None = None,
) -> QueueStore:
    """The durable store in ``path`` whose logs a clean stop closed holding what ``summary``
    says: nothing is opened until the store is used (see the module docstring)."""
    log_config = _log_config(config.queue_segment_bytes)
    opener = _LogOpener(os.fspath(path), log_config, config, clock, fsync_latency, executor)
    return QueueStore(
        _NOTHING_YET,
        _NOTHING_YET,
        None,
        max_batch_bytes=_batch_limit(log_config),
        opener=opener,
        closed=summary,
    )


def _read_back_logs(
    messages: LogLike, state: LogLike | None, keep_bodies: bool
) -> tuple[list[StoredMessage], bool, list[int]]:
    """What a queue's open logs hold before the queue took anything: the live records in
    offset order, whether the state log speaks of offsets the message log lost (then a
    snapshot must replace it), and the offsets of duplicates to settle."""
    boundary = 0
    live_below: set[int] = set()
    settled: set[int] = set()
    counts: dict[int, int] = {}
    if state is not None:
        for rec in iter_records(state):
            if rec.key == b"S" and rec.value is not None:
                boundary = _U64.unpack_from(rec.value, 0)[0]
                live_below = set()
                settled = set()
                counts = {}
                for o, s, c in _SNAP_ENTRY.iter_unpack(rec.value[8:]):
                    live_below.add(o)
                    if c:
                        counts[s] = c
            elif rec.key == b"A":
                settled.update(_unpack_u64s(rec.value))
            elif rec.key == b"D":
                for s in _unpack_u64s(rec.value):
                    counts[s] = counts.get(s, 0) + 1
    # State about offsets the message log does not have (its unsynced tail was lost in a
    # crash while the state log's was not) must not apply to the records that will get
    # those offsets now: it is dropped, and a snapshot makes that final.
    end = messages.next_offset
    stale = boundary > end or any(o >= end for o in settled) or any(s >= end for s in counts)
    by_seq: dict[int, StoredMessage] = {}
    duplicates: list[int] = []
    for item in iter_messages(messages):
        o = item.offset
        if o in settled or (o < boundary and o not in live_below):
            continue
        if item.transient:
            duplicates.append(o)  # not kept across restarts: settle it now
            continue
        previous = by_seq.get(item.seq)
        if previous is not None:
            duplicates.append(previous.offset)
        message = item.message
        by_seq[item.seq] = StoredMessage(
            o,
            item.seq,
            message if keep_bodies else None,
            item.expires_at,
            counts.get(item.seq, 0),
            message.priority,
            len(message.body),
            stored_size(message),
        )
    return sorted(by_seq.values(), key=lambda m: m.offset), stale, duplicates


def _snapshot_value(boundary: int, live: Sequence[StoredMessage]) -> bytes:
    return _U64.pack(boundary) + b"".join(
        _SNAP_ENTRY.pack(m.offset, m.seq, m.delivery_count) for m in live
    )


def _replace_by_snapshot(state: LogLike, boundary: int, live: Sequence[StoredMessage]) -> None:
    """Write a snapshot of ``live`` into ``state`` and fsync it on this thread, then drop the
    records before it (for the rare snapshot a lost tail asks for at a read back)."""
    at = state.next_offset
    state.append_records([RecordInput(b"S", _snapshot_value(boundary, live))])
    state.flush()
    state.delete_records_before(at)


def _close_both(messages: LogLike, state: LogLike) -> None:
    try:
        messages.close()
    finally:
        state.close()


def holds_logs(path: str) -> bool:
    """Whether a queue's directory holds its logs (one stat of a local directory entry, made
    on the loop's thread when a queue is declared)."""
    return os.path.isdir(os.path.join(path, "messages"))


def _remove_empty_dir(path: str) -> None:
    """Remove a deleted queue's directory once its logs are gone (a crash before this leaves
    an empty directory, which the next store of that name takes as new)."""
    try:
        os.rmdir(path)
        fsync_dir(os.path.dirname(path))
    except FileNotFoundError:
        pass
    except OSError as exc:
        raise StorageError(f"cannot remove {path}: {exc}", errno=exc.errno) from exc


def _log_open_failure(opening: asyncio.Future[None]) -> None:
    """An open that failed is logged here (its waiters, if any, got the error too)."""
    if not opening.cancelled() and (exc := opening.exception()) is not None:
        log.error("cannot create a queue's logs, will retry at the next write: %s", exc)


def _batch_limit(config: LogConfig) -> int:
    # A batch is never split across segments: keep batches small next to a segment, so that
    # space is still reclaimed segment by segment.
    return min(config.max_batch_bytes, max(config.segment_bytes // 4, 1))
