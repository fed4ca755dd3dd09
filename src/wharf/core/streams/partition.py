"""One partition of a topic: a storage log plus durability, visibility and producer checks.

How it works. :meth:`Partition.append` validates the batches once
(:func:`~wharf.storage.validated.validate_batches`: headers, sizes, CRCs), checks the
idempotent-producer sequences on those headers, writes the batches with
``log.append_validated`` (page cache, on the event-loop thread) and then, under ``--fsync
always`` with ``acks`` other than 0, waits for the partition's group committer, so the producer
hears back only once the data is on disk. When the append rolled the log to a new segment, the
producer state as of that segment's start is saved on the fsync pool (see producer_state).

The *high watermark* is the end of what consumers may see. Under ``always`` it is the durable
offset: a consumer never reads data that a crash could still take away. Under ``interval`` and
``never`` it is the log end. Reads stop at the high watermark; :meth:`wait_for_data` lets a
long-polling fetch sleep on an :class:`asyncio.Event` that is set each time the high watermark
moves (created only while someone waits, so appends pay nothing otherwise).

Logs are opened lazily. A partition made with a :class:`LogSummary` (a new partition: empty;
after a clean shutdown: what its log held when closed) has no open log, no file descriptor
and no directory until it is written: positions and sizes come from the summary, a fetch at the
log end answers empty, and what needs the records (an append, a fetch below the end, a
timestamp lookup, DeleteRecords, retention with something to delete) opens the log first, on
the fsync pool. :meth:`unload` closes an idle partition's log again, leaving its summary.

After a crash there is no summary, and the log must be recovered (its torn tail cut) before
its positions are known. A partition made with ``recover_later`` has neither log nor summary
(:attr:`Partition.recovering`): the topic manager recovers it in the background (the log
opened, so recovered, and closed again on the fsync pool, leaving its summary as a clean stop
would: :meth:`Partition.begin_recovery`, :meth:`Partition.recover_into` and
:meth:`Partition.end_recovery`), and whatever needs it first opens it then (on the pool
where the caller awaits, as an append or a fetch does; at once on the loop's thread where it
cannot wait, as for a high watermark). A use takes the recovery's place if it has not begun,
else waits for its end: one log is never opened twice at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from wharf.core.clock import Clock
from wharf.core.config import FsyncPolicy
from wharf.core.durability import GroupCommitter, run_off_loop
from wharf.core.stats import HistogramFamily
from wharf.core.streams.errors import (
    ErrorCode,
    ProducerStateError,
    StreamsError,
    UnknownTopicError,
)
from wharf.core.streams.producer_state import (
    NO_PRODUCER_ID,
    ProducerStateTable,
    last_sequence,
    write_snapshot,
)
from wharf.core.streams.topic_config import TopicConfig
from wharf.errors import OffsetOutOfRangeError, StorageError
from wharf.storage.log import Log, remove_log_dir
from wharf.storage.record_batch import (
    BatchHeader,
    Record,
    RecordInput,
    build_batch,
    decode_records,
    iter_batches,
)
from wharf.storage.retention import segments_past_retention
from wharf.storage.validated import validate_batches

__all__ = ["AppendResult", "LogSummary", "Partition", "decode_into", "wait_for_any"]

log = logging.getLogger(__name__)

LATEST_TIMESTAMP = -1  # ListOffsets: the high watermark
EARLIEST_TIMESTAMP = -2  # ListOffsets: the log start offset
MAX_TIMESTAMP = -3  # ListOffsets: the record with the largest timestamp
# Idempotent producer state saved by a clean close, beside the partition's segments.
PRODUCER_SNAPSHOT = "producer-state.json"


@dataclass(frozen=True, slots=True)
class AppendResult:
    base_offset: int
    last_offset: int
    log_start_offset: int
    duplicate: bool = False  # a retried idempotent batch that was already written
    log_append_time_ms: int = -1  # -1: records keep their CreateTime (LogAppendTime unused)


@dataclass(frozen=True, slots=True)
class LogSummary:
    """What a closed partition log holds, to answer for it without opening it: the log start
    and end offsets, its bytes, and its oldest segment's bytes and largest timestamp (what the
    retention rule looks at first)."""

    log_start_offset: int = 0
    log_end_offset: int = 0
    size_bytes: int = 0
    oldest_bytes: int = 0
    oldest_max_timestamp: int = -1

    @classmethod
    def of(cls, log: Log) -> LogSummary:
        oldest_bytes, oldest_max_timestamp = log.oldest_segment()
        return cls(
            log.log_start_offset, log.next_offset, log.size_bytes, oldest_bytes,
            oldest_max_timestamp,
        )  # fmt: skip

    def retention_due(self, config: TopicConfig, now_ms: int) -> bool:
        """Whether the retention rule would delete the oldest segment."""
        oldest = _Segment(self.oldest_bytes, self.oldest_max_timestamp)
        return segments_past_retention([oldest], self.size_bytes, config.log_config(), now_ms) > 0


@dataclass(frozen=True, slots=True)
class _Segment:
    size: int
    max_timestamp: int


EMPTY = LogSummary()


class Partition:
    """A partition of a topic; created and owned by the topic manager.

    ``summary``: the log is opened when first needed (see the module docstring); None: now."""

    def __init__(
        self,
        topic: str,
        index: int,
        path: Path,
        config: TopicConfig,
        *,
        fsync: FsyncPolicy,
        fsync_interval_ms: int,
        executor: Executor | None = None,
        clock: Clock | None = None,
        fsync_latency: HistogramFamily[str] | None = None,
        summary: LogSummary | None = None,
        on_open: Callable[[Partition], None] | None = None,
        room: Callable[[], contextlib.AbstractAsyncContextManager[None]] | None = None,
        recover_later: bool = False,
    ) -> None:
        self.topic = topic
        self._clock = clock if clock is not None else Clock()  # stamps LogAppendTime
        self.index = index
        self.path = path
        self.config = config
        self._fsync = fsync
        self._fsync_interval_ms = fsync_interval_ms
        self._executor = executor
        self._fsync_latency = fsync_latency
        self._log: Log | None = None
        self._committer: GroupCommitter | None = None
        self._producers: ProducerStateTable | None = None
        self._summary = summary
        self._on_open = on_open  # told each time the log opens
        self._room = room  # held around an open on the pool: the owner's limit on open logs
        self.used = False  # set by each append and read; the owner's eviction clears it
        self._opening: asyncio.Future[None] | None = None  # an open or unload under way
        self._open_task: asyncio.Task[None] | None = None
        self._recovery: concurrent.futures.Future[LogSummary] | None = None  # begin_recovery
        self._started = False
        self._data_event: asyncio.Event | None = None
        # Producer-state snapshots are written one at a time, in the order they were taken.
        self._snapshot_lock = asyncio.Lock()
        self._closed = False
        self._deleted = False
        # counters for metrics, read by the HTTP layer
        self.messages_in = 0
        self.bytes_in = 0
        self.batches_in = 0
        self.bytes_out = 0
        self._past_fsyncs = 0  # of the logs opened before this one
        if summary is None and not recover_later:
            self._install(*self._load())

    # ------------------------------------------------------------------ opening

    @property
    def is_open(self) -> bool:
        """Whether the log is open (holding its files)."""
        return self._log is not None

    @property
    def recovering(self) -> bool:
        """Whether a crash left the log to recover: not opened since, its positions unknown."""
        return self._log is None and self._summary is None

    def _opens_for(self, offset: int) -> bool:
        """Whether reading at ``offset`` needs the log opened (everything but the end of a
        closed log does)."""
        summary = self._summary
        return self._log is None and (summary is None or offset != summary.log_end_offset)

    @property
    def log(self) -> Log:
        """The open log (opened here, on the caller's thread, when it is not)."""
        if self._log is None:
            self._check_open()
            recovery = self._recovery
            if recovery is not None and not recovery.cancel():  # under way: its end first
                with contextlib.suppress(Exception):
                    recovery.result()
            self._install(*self._load())
        assert self._log is not None
        return self._log

    @property
    def committer(self) -> GroupCommitter:
        if self._committer is None:
            self.log  # noqa: B018 - opens it
        assert self._committer is not None
        return self._committer

    @property
    def producers(self) -> ProducerStateTable:
        if self._producers is None:
            self.log  # noqa: B018 - opens it
        assert self._producers is not None
        return self._producers

    async def open(self) -> None:
        """Open the log on the fsync pool, unless it is open (concurrent callers share one
        open, and wait for an :meth:`unload` under way); raises for a closed or deleted
        partition. The open runs to its end even if its callers are cancelled, so two opens
        of one directory never overlap."""
        while self._log is None:
            self._check_open()
            if self._opening is None:
                self._opening = asyncio.get_running_loop().create_future()
                self._open_task = asyncio.get_running_loop().create_task(
                    self._open_into(self._opening)
                )
            await asyncio.shield(self._opening)
        self._check_open()

    async def _open_into(self, opening: asyncio.Future[None]) -> None:
        room = contextlib.nullcontext() if self._room is None else self._room()
        with self._marking(opening, reraise=False):  # the waiters raise it
            await self._no_recovery_under_way()
            async with room:
                loaded = await run_off_loop(self._executor, self._load)
                if self._closed or self._log is not None:
                    loaded[0].close()
                else:
                    self._install(*loaded)

    @contextlib.contextmanager
    def _marking(self, busy: asyncio.Future[None], *, reraise: bool) -> Iterator[None]:
        """Hold ``busy`` as :attr:`_opening` (an open or unload under way) while the block
        runs, then resolve it with the block's outcome, which its waiters raise (and the
        block's caller too, if ``reraise``)."""
        self._opening = busy
        try:
            yield
        except asyncio.CancelledError:
            busy.cancel()
            raise
        except Exception as exc:
            busy.set_exception(exc)
            busy.exception()  # retrieved: each waiter raises it itself
            if reraise:
                raise
        else:
            busy.set_result(None)
        finally:
            self._opening = None
            self._open_task = None

    def _load(self) -> tuple[Log, ProducerStateTable]:
        """Open the log and rebuild its producer state (blocks on the disk)."""
        log = Log.open(self.path, self.config.log_config())
        producers = ProducerStateTable()
        try:
            producers.rebuild(log, self.path / PRODUCER_SNAPSHOT)
        except BaseException:
            log.close()
            raise
        return log, producers

    def _install(self, log: Log, producers: ProducerStateTable) -> None:
        self._log = log
        self._producers = producers
        self._committer = GroupCommitter(
            log,
            self._fsync,
            interval_ms=self._fsync_interval_ms,
            durable_offset=log.durable_offset,
            on_durable=self._durable_advanced,
            executor=self._executor,
            kind="partition",
            fsync_latency=self._fsync_latency,
            clock=self._clock,
        )
        self._summary = None
        self.used = True
        if self._started:
            self._committer.start()
        if self._on_open is not None:
            self._on_open(self)

    def start(self) -> None:
        self._started = True
        if self._committer is not None:
            self._committer.start()

    @property
    def summary(self) -> LogSummary:
        """What the log holds (read from the open log, or kept since it was closed)."""
        return self._summary if self._summary is not None else LogSummary.of(self.log)

    @property
    def idle(self) -> bool:
        """Whether :meth:`unload` may close the log now: open, not opening, no flush waited
        for (a long poll waits on the high watermark, which a closed log keeps)."""
        return (
            self._log is not None
            and self._opening is None
            and not self._snapshot_lock.locked()
            and self.committer.idle
        )

    async def unload(self) -> None:
        """Close an idle log (see :attr:`idle`), keeping its summary; the partition stays
        usable and opens the log again when needed (after this close)."""
        if not self.idle or self._closed:
            return
        log, committer, producers = self._log, self._committer, self._producers
        assert log is not None and committer is not None and producers is not None
        summary = self._summary = LogSummary.of(log)  # idle: all of it flushed already
        self._past_fsyncs += committer.fsyncs  # idle: no flush runs that could add one
        self._log = self._committer = self._producers = None
        with self._marking(asyncio.get_running_loop().create_future(), reraise=True):
            await self._close_log(log, committer, producers, summary)

    async def _close_log(
        self,
        log: Log,
        committer: GroupCommitter,
        producers: ProducerStateTable,
        summary: LogSummary,
    ) -> None:
        """Close ``log``; ``summary`` (what it holds, taken before) answers for it once
        closed."""
        await committer.close()
        await committer.run(log.close)
        self._summary = summary
        if len(producers):  # none: the next open finds none in the log either, by itself
            await self._save_producers(producers.snapshot(summary.log_end_offset), committer)

    async def _no_open_under_way(self) -> None:
        """Wait until no open, unload or recovery runs (their own callers hear how they
        ended)."""
        while self._opening is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._opening)
        await self._no_recovery_under_way()

    async def _no_recovery_under_way(self) -> None:
        """Take the place of a recovery that has not begun, or wait for its end."""
        recovery = self._recovery
        if recovery is not None and not recovery.cancel() and not recovery.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(asyncio.wrap_future(recovery))

    def begin_recovery(self) -> concurrent.futures.Future[LogSummary] | None:
        """The recovery of a log a crash left (see :attr:`recovering`), for
        :meth:`recover_into` to run on the fsync pool; None when there is nothing to do (the
        log is open, opening, or the partition closed)."""
        if not self.recovering or self._opening is not None or self._closed:
            return None
        recovery = self._recovery = concurrent.futures.Future()
        return recovery

    def recover_into(self, recovery: concurrent.futures.Future[LogSummary]) -> None:
        """On the fsync pool: open the log, which cuts a torn tail, and close it again,
        setting ``recovery`` to its summary (or to the error); nothing when a use of the
        partition took its place (cancelled it) first."""
        if not recovery.set_running_or_notify_cancel():
            return
        try:
            log = Log.open(self.path, self.config.log_config())
            try:
                summary = LogSummary.of(log)
            finally:
                log.close()
        except BaseException as exc:
            recovery.set_exception(exc)
        else:
            recovery.set_result(summary)

    def end_recovery(self, recovery: concurrent.futures.Future[LogSummary]) -> None:
        """On the loop's thread, after :meth:`recover_into`: keep the summary, unless the log
        was opened meanwhile; raises the recovery's error."""
        if self._recovery is recovery:
            self._recovery = None
        if recovery.cancelled():
            return
        summary = recovery.result()
        if self.recovering and not self._closed:
            self._summary = summary

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._no_open_under_way()
        if self._log is not None:
            assert self._committer is not None and self._producers is not None
            summary = LogSummary.of(self._log)
            await self._close_log(self._log, self._committer, self._producers, summary)
        self._wake()

    async def _save_producers(self, snapshot: bytes, committer: GroupCommitter) -> None:
        """Write a producer-state snapshot (:meth:`ProducerStateTable.snapshot`) on the fsync
        pool: at a roll, the state as of the new segment's start, so that recovery after a
        crash replays at most the active segment; at close, the final state."""
        path = self.path / PRODUCER_SNAPSHOT
        try:
            async with self._snapshot_lock:
                await committer.run(lambda: write_snapshot(path, snapshot))
        except StorageError:
            log.exception("producer state snapshot of %s-%d not written", self.topic, self.index)

    async def delete(self, *, sync: bool = True) -> None:
        """Close and remove the partition's files; later calls report an unknown partition.
        ``sync``: make the removal durable (a caller deleting many may fsync their parent
        once itself)."""
        self._closed = True
        self._deleted = True
        self._wake()
        await self._no_open_under_way()
        if self._log is not None:
            assert self._committer is not None
            await self._committer.close()
            await self._committer.run(partial(self._log.delete, sync=sync))
        else:
            await run_off_loop(self._executor, partial(remove_log_dir, self.path, sync=sync))

    # ------------------------------------------------------------------ positions

    @property
    def high_watermark(self) -> int:
        summary = self._summary
        if summary is not None:  # a closed log: everything in it was flushed
            return summary.log_end_offset
        if self.committer.policy is FsyncPolicy.ALWAYS:
            return max(self.committer.durable_offset, self.log.log_start_offset)
        return self.log.next_offset

    @property
    def log_start_offset(self) -> int:
        summary = self._summary
        return summary.log_start_offset if summary is not None else self.log.log_start_offset

    @property
    def log_end_offset(self) -> int:
        summary = self._summary
        return summary.log_end_offset if summary is not None else self.log.next_offset

    @property
    def size_bytes(self) -> int:
        summary = self._summary
        return summary.size_bytes if summary is not None else self.log.size_bytes

    @property
    def fsyncs(self) -> int:
        committer = self._committer
        return self._past_fsyncs + (committer.fsyncs if committer is not None else 0)

    # ------------------------------------------------------------------ writing

    async def append(self, batches: bytes, *, acks: int = -1) -> AppendResult:
        """Append Kafka record batches (one or more, concatenated) as sent by a producer
        (stamped with the append time first when the topic has
        ``message.timestamp.type=LogAppendTime``).

        Raises ``BatchTooLargeError`` for a batch above ``max.message.bytes``,
        ``CorruptBatchError`` for other invalid batches (nothing written),
        :class:`ProducerStateError` for idempotence violations and ``StorageError`` for I/O
        failures.
        """
        if self._log is None:
            await self.open()
        self._check_open()
        self.used = True
        validated = validate_batches(batches, self.log.config.max_batch_bytes)
        headers = validated.headers
        duplicate = self._check_producers(headers)
        if duplicate is not None:
            await self._wait_durable(duplicate.last_offset + 1, acks)
            return duplicate
        append_time = -1
        if self.config.log_append_time:
            append_time = self._clock.now_ms()
            validated = validated.with_log_append_time(append_time)
        info = self.log.append_validated(validated)
        # The state before this append's batches is the state at the new segment's start.
        snapshot = self.producers.snapshot(info.base_offset) if info.rolled else None
        offset = info.base_offset
        for header in headers:
            self.producers.record(header, offset)
            offset += header.last_offset_delta + 1
        self.messages_in += validated.records
        self.bytes_in += info.size
        self.batches_in += len(headers)
        if self.committer.policy is not FsyncPolicy.ALWAYS:
            self.committer.written()
            self._wake()
        if snapshot is not None:
            await self._save_producers(snapshot, self.committer)
        await self._wait_durable(info.last_offset + 1, acks)
        return AppendResult(
            info.base_offset, info.last_offset, self.log_start_offset,
            log_append_time_ms=append_time,
        )

    async def append_records(
        self, records: Sequence[RecordInput], *, acks: int = -1, now_ms: int | None = None
    ) -> AppendResult:
        """Encode ``records`` into one batch and append it (the embedded API's path)."""
        return await self.append(build_batch(records, now_ms=now_ms), acks=acks)

    def _check_producers(self, headers: list[BatchHeader]) -> AppendResult | None:
        idempotent = [h for h in headers if h.producer_id != NO_PRODUCER_ID]
        if not idempotent:
            return None
        if len(headers) == 1:
            duplicate = self.producers.check(headers[0])
            if duplicate is None:
                return None
            return AppendResult(
                duplicate.first_offset,
                duplicate.last_offset,
                self.log.log_start_offset,
                duplicate=True,
            )
        # several batches in one append: each must be new and follow the one before it
        previous: dict[int, BatchHeader] = {}
        for header in idempotent:
            before = previous.get(header.producer_id)
            if before is None:
                if self.producers.check(header) is not None:
                    raise ProducerStateError(
                        "a retried batch was sent together with other batches",
                        ErrorCode.DUPLICATE_SEQUENCE_NUMBER,
                    )
            elif header.producer_epoch != before.producer_epoch or (
                header.base_sequence != (last_sequence(before) + 1) % 2**31
            ):
                raise ProducerStateError(
                    f"batches of producer {header.producer_id} in one append are not in sequence",
                    ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                )
            previous[header.producer_id] = header
        return None

    async def _wait_durable(self, end_offset: int, acks: int) -> None:
        if self.committer.policy is not FsyncPolicy.ALWAYS:
            return
        if acks == 0:
            self.committer.request_flush(end_offset)
        else:
            await self.committer.wait_durable(end_offset)

    # ------------------------------------------------------------------ reading

    def read(self, offset: int, max_bytes: int) -> bytes:
        """Whole batches from the one holding ``offset``, none at or past the high watermark.

        At least one batch is returned when one is available, even above ``max_bytes``. An
        offset past the log end, or before the log start, raises :class:`OffsetOutOfRangeError`.
        """
        self._check_open()
        summary = self._summary
        if summary is not None and offset == summary.log_end_offset >= summary.log_start_offset:
            return b""  # at the end of a closed log: nothing to read, no need to open it
        hw = self.high_watermark
        if offset < self.log.log_start_offset or offset > self.log.next_offset:
            raise OffsetOutOfRangeError(
                f"offset {offset} is outside [{self.log.log_start_offset}, "
                f"{self.log.next_offset}] of {self.topic}-{self.index}"
            )
        if offset >= hw:
            return b""
        self.used = True
        try:
            data = self.log.read(offset, max_bytes, max_offset=hw)
        except StorageError as exc:
            if offset < self.log.log_start_offset:  # retention moved the start meanwhile
                raise OffsetOutOfRangeError(str(exc)) from exc
            raise
        self.bytes_out += len(data)
        return data

    async def fetch(self, offset: int, max_bytes: int) -> bytes:
        """:meth:`read` for the front ends (the protocol a cluster partition shares), opening
        the log on the fsync pool when the read needs it."""
        if self._opens_for(offset):
            await self.open()
        return self.read(offset, max_bytes)

    def read_records(self, offset: int, max_records: int, max_bytes: int = 1 << 20) -> list[Record]:
        """Decoded records from ``offset`` on (control batches skipped), at most ``max_records``."""
        out: list[Record] = []
        while len(out) < max_records:
            data = self.read(offset, max_bytes)
            if not data:
                break
            offset = decode_into(out, data, offset)
        return out[:max_records]

    async def fetch_records(
        self, offset: int, max_records: int, max_bytes: int = 1 << 20
    ) -> list[Record]:
        """:meth:`read_records` for the front ends."""
        if self._opens_for(offset):
            await self.open()
        return self.read_records(offset, max_records, max_bytes)

    async def wait_for_data(self, offset: int, timeout_s: float | None = None) -> bool:
        """Wait until the high watermark passes ``offset`` (True) or ``timeout_s`` runs out
        (``None``: no limit; the partition closing also ends the wait)."""
        return await wait_for_any([(self, offset)], timeout_s)

    async def find_offset(self, timestamp_ms: int) -> tuple[int, int]:
        """:meth:`list_offset` for the front ends."""
        if self._log is None and (
            self._summary is None or timestamp_ms not in (LATEST_TIMESTAMP, EARLIEST_TIMESTAMP)
        ):
            await self.open()
        return self.list_offset(timestamp_ms)

    def list_offset(self, timestamp_ms: int) -> tuple[int, int]:
        """ListOffsets: ``(offset, timestamp)`` for a timestamp, or for -1 (latest: the high
        watermark), -2 (earliest: the log start) or -3 (the record with the largest timestamp).

        For a timestamp, the first record at or after it below the high watermark. ``(-1, -1)``
        when there is none.
        """
        if timestamp_ms == LATEST_TIMESTAMP:
            return self.high_watermark, -1
        if timestamp_ms == EARLIEST_TIMESTAMP:
            return self.log_start_offset, -1
        if timestamp_ms == MAX_TIMESTAMP:
            return self._max_timestamp()
        if timestamp_ms < 0:
            raise StreamsError(
                f"unsupported ListOffsets timestamp {timestamp_ms}", ErrorCode.INVALID_REQUEST
            )
        hw = self.high_watermark
        found = self.log.offset_for_timestamp(timestamp_ms)
        while found is not None and found < hw:
            records = self.read_records(found, 500)
            if not records:
                break
            for record in records:
                if record.timestamp_ms >= timestamp_ms:
                    return record.offset, record.timestamp_ms
                found = record.offset + 1
        return -1, -1

    def _max_timestamp(self) -> tuple[int, int]:
        """The first record with the largest timestamp below the high watermark.

        A segment wholly visible (between the log start and the high watermark) is known by
        the largest timestamp it keeps; only a segment cut by either end has its batch headers
        read, and then the batches of the one segment holding the winner."""
        hw, start = self.high_watermark, self.log.log_start_offset
        best_ts, best_range = -1, None
        for base, end, segment_max in self.log.segment_timestamps():
            low, high = max(base, start), min(end, hw)
            if low >= high:
                continue
            if base < start or end > hw:
                segment_max = max((h.max_timestamp for _, h, _ in self._headers_in(low, high)),
                                  default=-1)
            if segment_max > best_ts:
                best_ts, best_range = segment_max, (low, high)
        if best_range is None:
            return -1, -1
        for _, header, batch in self._headers_in(*best_range):
            if header.max_timestamp == best_ts:
                for record in decode_records(batch):
                    if record.timestamp_ms == best_ts:
                        return record.offset, best_ts
                return header.last_offset, best_ts
        return -1, -1

    def _headers_in(self, low: int, high: int) -> Iterator[tuple[int, BatchHeader, bytes]]:
        """(position, header, batch bytes) of the data batches holding offsets in [low, high)."""
        offset = low
        while offset < high:
            data = self.log.read(offset, 1 << 20, max_offset=high)
            if not data:
                return
            for position, header in iter_batches(data, max_batch_bytes=len(data)):
                offset = header.last_offset + 1
                if not header.is_control:
                    yield position, header, data[position : position + header.size]

    # ------------------------------------------------------------------ deletion

    async def delete_records(self, offset: int) -> int:
        """:meth:`delete_records_before` for the front ends."""
        if self._log is None:
            await self.open()
        return self.delete_records_before(offset)

    def delete_records_before(self, offset: int) -> int:
        """DeleteRecords: hide everything below ``offset`` (-1: the high watermark).

        Returns the new log start offset (Kafka's low watermark).
        """
        hw = self.high_watermark
        target = hw if offset == -1 else offset
        if target < 0 or target > hw:
            raise OffsetOutOfRangeError(
                f"cannot delete records before {offset}: the high watermark is {hw}"
            )
        self.log.delete_records_before(target)
        return self.log.log_start_offset

    def enforce_retention(self, now_ms: int) -> int:
        """Drop whole segments past ``retention.ms``/``retention.bytes``; returns how many."""
        summary = self._summary
        if self._closed or (self._log is None and summary is None):
            return 0  # (recovering: the background opens it soon, retention applies then)
        if summary is not None and not summary.retention_due(self.config, now_ms):
            return 0
        return self.log.enforce_retention(now_ms)

    def update_config(self, config: TopicConfig) -> None:
        self.config = config
        if self._log is not None:
            self._log.config = config.log_config()

    # ------------------------------------------------------------------ internals

    def _durable_advanced(self, _durable: int) -> None:
        self._wake()

    def _wake(self) -> None:
        event = self._data_event
        if event is not None:
            self._data_event = None
            event.set()

    def _event(self) -> asyncio.Event:
        if self._data_event is None:
            self._data_event = asyncio.Event()
        return self._data_event

    def _check_open(self) -> None:
        if self._deleted:
            raise UnknownTopicError(f"partition {self.topic}-{self.index} was deleted")
        if self._closed:
            raise StorageError(f"partition {self.topic}-{self.index} is closed")


def decode_into(out: list[Record], data: bytes, offset: int) -> int:
    """Add the records at or past ``offset`` in ``data`` (whole batches, control batches
    skipped) to ``out``; returns the offset after the last batch."""
    for position, header in iter_batches(data, max_batch_bytes=len(data)):
        if not header.is_control:
            batch = data[position : position + header.size]
            out.extend(r for r in decode_records(batch) if r.offset >= offset)
        offset = header.last_offset + 1
    return offset


async def wait_for_any(
    positions: Sequence[tuple[Partition, int]], timeout_s: float | None = None
) -> bool:
    """Wait until any partition's high watermark passes its offset, or ``timeout_s`` runs out.

    For a long-polling fetch over several partitions; returns whether data is available (a
    closing partition also ends the wait, with True: the caller's read then reports it).
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    while True:
        if any(p.high_watermark > offset or p._closed for p, offset in positions):
            return True
        remaining = None if deadline is None else deadline - loop.time()
        if (remaining is not None and remaining <= 0) or not positions:
            return False
        waits = [asyncio.ensure_future(p._event().wait()) for p, _ in positions]
        try:
            await asyncio.wait(waits, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in waits:
                task.cancel()
