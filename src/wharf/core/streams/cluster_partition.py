"""A partition of a cluster's topic: appends go to the node's stream writer, reads to its
stream reader, long polls to its watermarks (docs/cluster.md, "The streams commit path").

How it works: :meth:`ClusterPartition.append` validates the producer's batches once
(:func:`~wharf.storage.validated.validate_batches`, the topic's ``max.message.bytes``), stamps
LogAppendTime when the topic asks for it, and hands them to the writer, which answers once the
flush holding them has committed. The writer's status becomes what the local partition would
have raised: idempotence violations a :class:`ProducerStateError`, a partition the catalogue no
longer has an :class:`UnknownTopicError`, a lost node lease a :class:`StreamsError` with
NOT_LEADER_OR_FOLLOWER (the client refreshes its metadata and tries again, here or elsewhere);
a failed PUT or transaction stays a ``StorageError`` (KAFKA_STORAGE_ERROR, retriable).

The high watermark is the newest of what the watermarks learnt from the commit notifications,
what the last read or append saw, and what the catalogue said at its last refresh; nothing is
queried for it. DeleteRecords moves the log start in the catalogue, on this node's lease
(``delete_records``, given by the manager). This module is imported only in cluster mode
(``wharf.cluster.streams`` needs the cluster's drivers).
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import assert_never

from wharf.cluster.nodes import LeaseLostError
from wharf.cluster.streams.reader import StreamReader
from wharf.cluster.streams.watermarks import Watermarks
from wharf.cluster.streams.writer import Appended, AppendStatus, StreamWriter
from wharf.core.clock import Clock
from wharf.core.streams.errors import (
    ErrorCode,
    ProducerStateError,
    StreamsError,
    UnknownTopicError,
)
from wharf.core.streams.partition import (
    EARLIEST_TIMESTAMP,
    LATEST_TIMESTAMP,
    MAX_TIMESTAMP,
    AppendResult,
    decode_into,
)
from wharf.core.streams.topic_config import TopicConfig
from wharf.errors import NotFoundError, OffsetOutOfRangeError
from wharf.storage.record_batch import Record, RecordInput, build_batch
from wharf.storage.validated import validate_batches

__all__ = ["ClusterPartition", "lease_lost"]

_WAIT_SLICE_S = 60.0  # an unbounded wait is a series of bounded ones


def lease_lost(exc: LeaseLostError, code: ErrorCode) -> StreamsError:
    """The streams error a lost node lease is answered with (``code``: NOT_LEADER_OR_FOLLOWER
    for partitions, NOT_CONTROLLER for the catalogue)."""
    return StreamsError(f"this node lost its cluster lease: {exc}", code)


class ClusterPartition:
    """One partition of a cluster topic, as this node serves it; see the module docstring."""

    def __init__(
        self,
        topic: str,
        topic_id: uuid.UUID,
        index: int,
        config: TopicConfig,
        *,
        writer: StreamWriter,
        reader: StreamReader,
        watermarks: Watermarks,
        clock: Clock,
        delete_records: Callable[[uuid.UUID, int, int], Awaitable[int]],
    ) -> None:
        self.topic = topic
        self.topic_id = topic_id
        self.index = index
        self.config = config
        self._max_batch_bytes = config.log_config().max_batch_bytes
        self._writer = writer
        self._reader = reader
        self._watermarks = watermarks
        self._clock = clock
        self._delete_records = delete_records
        self._high_watermark = 0
        self._log_start_offset = 0
        self.size_bytes = 0
        """The partition's stored bytes at the last catalogue refresh."""
        self.deleted = False
        # counters for metrics: this node's share of the partition's traffic
        self.messages_in = 0
        self.bytes_in = 0
        self.batches_in = 0
        self.bytes_out = 0

    # ------------------------------------------------------------------ positions

    @property
    def high_watermark(self) -> int:
        heard = self._watermarks.high_watermark(self.topic_id, self.index)
        return self._high_watermark if heard is None else max(heard, self._high_watermark)

    @property
    def log_start_offset(self) -> int:
        return self._log_start_offset

    @property
    def log_end_offset(self) -> int:
        return self.high_watermark  # only committed batches have offsets

    @property
    def fsyncs(self) -> int:
        return 0  # durability is the object store's and the database's

    def update_config(self, config: TopicConfig) -> None:
        self.config = config
        self._max_batch_bytes = config.log_config().max_batch_bytes

    def learn(self, log_start_offset: int, high_watermark: int) -> None:
        """Positions seen by a read, an append or the catalogue: they only move forward."""
        self._log_start_offset = max(self._log_start_offset, log_start_offset)
        self._high_watermark = max(self._high_watermark, high_watermark)

    # ------------------------------------------------------------------ writing

    async def append(self, batches: bytes, *, acks: int = -1) -> AppendResult:
        """Append a producer's batches; answered once their flush committed (``acks`` 0 too:
        the Kafka handler then sends nothing)."""
        self._check_live()
        validated = validate_batches(batches, self._max_batch_bytes)
        append_time = -1
        if self.config.log_append_time:
            append_time = self._clock.now_ms()
            validated = validated.with_log_append_time(append_time)
        try:
            appended = await self._writer.append(self.topic_id, self.index, validated)
        except LeaseLostError as exc:
            raise lease_lost(exc, ErrorCode.NOT_LEADER_OR_FOLLOWER) from exc
        self._check_status(appended)
        if appended.status is AppendStatus.APPENDED:
            self.messages_in += validated.records
            self.bytes_in += validated.size
            self.batches_in += len(validated.headers)
        else:
            append_time = -1  # a duplicate keeps the time it was first appended with
        self.learn(appended.log_start_offset, appended.last_offset + 1)
        return AppendResult(
            appended.base_offset,
            appended.last_offset,
            appended.log_start_offset,
            duplicate=appended.status is AppendStatus.DUPLICATE,
            log_append_time_ms=append_time,
        )

    def _check_status(self, appended: Appended) -> None:
        """Raise what the local partition raises for a refused append."""
        where = f"{self.topic}-{self.index}"
        match appended.status:
            case AppendStatus.APPENDED | AppendStatus.DUPLICATE:
                return
            case AppendStatus.DUPLICATE_SEQUENCE:
                raise ProducerStateError(
                    f"a retried batch was sent together with other batches to {where}",
                    ErrorCode.DUPLICATE_SEQUENCE_NUMBER,
                )
            case AppendStatus.OUT_OF_ORDER_SEQUENCE:
                raise ProducerStateError(
                    f"out-of-order sequence number for {where}",
                    ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                )
            case AppendStatus.INVALID_PRODUCER_EPOCH:
                raise ProducerStateError(
                    f"producer epoch is older than the latest for {where}",
                    ErrorCode.INVALID_PRODUCER_EPOCH,
                )
            case AppendStatus.UNKNOWN_PARTITION:
                raise UnknownTopicError(f"partition {where} does not exist")
            case _:
                assert_never(appended.status)

    async def append_records(
        self, records: Sequence[RecordInput], *, acks: int = -1, now_ms: int | None = None
    ) -> AppendResult:
        """Encode ``records`` into one batch and append it (the embedded API's path)."""
        return await self.append(build_batch(records, now_ms=now_ms), acks=acks)

    # ------------------------------------------------------------------ reading

    async def fetch(self, offset: int, max_bytes: int) -> bytes:
        """Whole committed batches from the one holding ``offset`` (see the reader)."""
        self._check_live()
        try:
            data, position = await self._reader.read(self.topic_id, self.index, offset, max_bytes)
        except OffsetOutOfRangeError:
            await self._refresh_position()  # so that the answer carries the true bounds
            raise
        except NotFoundError as exc:
            raise UnknownTopicError(str(exc)) from exc
        self.learn(position.log_start_offset, position.high_watermark)
        self.bytes_out += len(data)
        return data

    async def fetch_records(
        self, offset: int, max_records: int, max_bytes: int = 1 << 20
    ) -> builtins.list[Record]:
        out: builtins.list[Record] = []
        while len(out) < max_records:
            data = await self.fetch(offset, max_bytes)
            if not data:
                break
            offset = decode_into(out, data, offset)
        return out[:max_records]

    async def find_offset(self, timestamp_ms: int) -> tuple[int, int]:
        self._check_live()
        if timestamp_ms < 0 and timestamp_ms not in (
            LATEST_TIMESTAMP, EARLIEST_TIMESTAMP, MAX_TIMESTAMP
        ):
            raise StreamsError(
                f"unsupported ListOffsets timestamp {timestamp_ms}", ErrorCode.INVALID_REQUEST
            )
        try:
            return await self._reader.list_offset(self.topic_id, self.index, timestamp_ms)
        except NotFoundError as exc:
            raise UnknownTopicError(str(exc)) from exc

    async def delete_records(self, offset: int) -> int:
        """DeleteRecords: hide everything below ``offset`` (-1: the high watermark); returns
        the new log start. The local partition's range rule: past the log end (or below -1)
        is ``OffsetOutOfRangeError``, at or below the log start nothing moves."""
        self._check_live()
        try:
            log_start = await self._delete_records(self.topic_id, self.index, offset)
        except LeaseLostError as exc:
            raise lease_lost(exc, ErrorCode.NOT_LEADER_OR_FOLLOWER) from exc
        except NotFoundError as exc:
            raise UnknownTopicError(str(exc)) from exc
        except OffsetOutOfRangeError:
            await self._refresh_position()
            raise
        self.learn(log_start, log_start)
        return log_start

    async def wait_for_data(self, offset: int, timeout_s: float | None = None) -> bool:
        """Wait until the high watermark passes ``offset`` (True) or the time runs out."""
        while True:
            if self.high_watermark > offset or self.deleted:
                return True
            slice_s = _WAIT_SLICE_S if timeout_s is None else timeout_s
            woken = await self._watermarks.wait_for_any(
                [(self.topic_id, self.index, offset)], slice_s
            )
            if woken or timeout_s is not None:
                return woken

    # ------------------------------------------------------------------ internals

    async def _refresh_position(self) -> None:
        try:
            position = await self._reader.position(self.topic_id, self.index)
        except NotFoundError:
            return
        self.learn(position.log_start_offset, position.high_watermark)

    def _check_live(self) -> None:
        if self.deleted:
            raise UnknownTopicError(f"partition {self.topic}-{self.index} was deleted")
