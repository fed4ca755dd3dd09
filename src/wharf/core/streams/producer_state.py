"""Idempotent producers: producer ids, epochs and sequence numbers per partition.

How it works. :class:`ProducerIdAllocator` hands out producer ids from a counter persisted in
blocks (``<data>/producer-id-block``): the file holds the first id of the next unused block, so
ids are never reused across restarts and the file is rewritten once per block (on the broker's
fsync pool; an id is handed out only once the block holding it is on disk).

Per partition, :class:`ProducerStateTable` keeps for every producer id its epoch and the last
five batches it wrote (first and last sequence, first and last offset), like Kafka's broker:

* a batch from an older epoch is refused (``INVALID_PRODUCER_EPOCH``);
* a batch equal to one of the cached five (same epoch, same sequence range) is a retry of a
  write that already succeeded: it is not written again and the original offsets are returned;
* otherwise its first sequence must follow the producer's last one (``OUT_OF_ORDER_SEQUENCE_
  NUMBER``), except for a new epoch, whose first batch must start at sequence 0, and for a
  producer the partition has no state for (its state may have aged out of the log), which is
  accepted as it comes.

Sequences are 31-bit and wrap to 0 after ``2**31 - 1``. The partition saves the table as a
snapshot (``producer-state.json`` in the partition directory, with the offset it describes)
when its log rolls to a new segment (the state before the batch that opens it) and when it
closes cleanly; opening loads it and replays the batch headers written after it, so after a
crash at most the active segment is replayed. Without a usable snapshot (none yet, or the log
ends before the offset it names) the table is rebuilt from the batch headers of the log tail,
:data:`REBUILD_TAIL_OFFSETS` offsets back at most.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import msgspec

from wharf.core.durability import run_off_loop
from wharf.core.streams.errors import ErrorCode, ProducerStateError
from wharf.storage.checkpoint import read_checkpoint, replace_file, write_checkpoint
from wharf.storage.interface import LogLike
from wharf.storage.record_batch import HEADER_SIZE, BatchHeader, parse_header

__all__ = [
    "BatchRange",
    "DuplicateBatch",
    "ProducerIdAllocator",
    "ProducerStateTable",
    "write_snapshot",
]

NO_PRODUCER_ID = -1
BATCHES_KEPT = 5
MAX_SEQUENCE = 2**31 - 1
REBUILD_TAIL_OFFSETS = 100_000
_ID_BLOCK = 1000
_ID_FILE = "producer-id-block"
_READ_CHUNK = 1 << 20


class ProducerIdAllocator:
    """Allocates producer ids that are unique across restarts of one data directory."""

    def __init__(self, data_dir: Path, executor: Executor | None = None) -> None:
        """``executor``: the broker's fsync pool, which writes the blocks (the loop's default
        pool when None)."""
        self._path = os.fspath(data_dir / _ID_FILE)
        self._executor = executor
        self._next = read_checkpoint(self._path) or 0
        self._block_end = self._next
        self._writing = asyncio.Lock()  # one block written at a time

    def allocated(self, producer_id: int) -> bool:
        """Whether ``producer_id`` may have been handed out by this data directory."""
        return 0 <= producer_id < self._next

    async def allocate(self) -> int:
        """A fresh producer id; the first of a block waits until the block is on disk."""
        while self._next >= self._block_end:
            async with self._writing:
                if self._next >= self._block_end:
                    end = self._next + _ID_BLOCK
                    await run_off_loop(self._executor, partial(write_checkpoint, self._path, end))
                    self._block_end = end
        producer_id = self._next
        self._next += 1
        return producer_id


@dataclass(frozen=True, slots=True)
class BatchRange:
    first_seq: int
    last_seq: int
    first_offset: int
    last_offset: int


@dataclass(frozen=True, slots=True)
class DuplicateBatch:
    """A retried batch that is already in the log, with where it went."""

    first_offset: int
    last_offset: int


@dataclass(slots=True)
class _ProducerEntry:
    epoch: int
    batches: deque[BatchRange] = field(default_factory=lambda: deque(maxlen=BATCHES_KEPT))

    @property
    def last_seq(self) -> int | None:
        return self.batches[-1].last_seq if self.batches else None


def last_sequence(header: BatchHeader) -> int:
    return (header.base_sequence + header.last_offset_delta) % (MAX_SEQUENCE + 1)


def _in_sequence(last_seq: int, next_seq: int) -> bool:
    return next_seq == last_seq + 1 or (next_seq == 0 and last_seq == MAX_SEQUENCE)


class ProducerStateTable:
    """Producer epochs and recent batches of one partition; see the module docstring."""

    def __init__(self) -> None:
        self._producers: dict[int, _ProducerEntry] = {}

    def __len__(self) -> int:
        return len(self._producers)

    def check(self, header: BatchHeader) -> DuplicateBatch | None:
        """Validate an incoming batch before it is written.

        Returns the earlier placement of a retried duplicate; raises
        :class:`ProducerStateError` for a fenced epoch or a sequence gap.
        """
        if header.producer_id == NO_PRODUCER_ID:
            return None
        entry = self._producers.get(header.producer_id)
        if entry is None:
            return None
        if header.producer_epoch < entry.epoch:
            raise ProducerStateError(
                f"producer {header.producer_id} epoch {header.producer_epoch} is older than "
                f"the current epoch {entry.epoch}",
                ErrorCode.INVALID_PRODUCER_EPOCH,
            )
        if header.producer_epoch > entry.epoch:
            if header.base_sequence != 0:
                raise ProducerStateError(
                    f"first sequence of producer {header.producer_id} in new epoch "
                    f"{header.producer_epoch} is {header.base_sequence}, expected 0",
                    ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
                )
            return None
        last = last_sequence(header)
        for batch in entry.batches:
            if batch.first_seq == header.base_sequence and batch.last_seq == last:
                return DuplicateBatch(batch.first_offset, batch.last_offset)
        if entry.last_seq is not None and not _in_sequence(entry.last_seq, header.base_sequence):
            raise ProducerStateError(
                f"producer {header.producer_id} sent sequence {header.base_sequence} after "
                f"{entry.last_seq}",
                ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER,
            )
        return None

    def record(self, header: BatchHeader, first_offset: int) -> None:
        """Remember a batch just written at ``first_offset``."""
        if header.producer_id == NO_PRODUCER_ID or header.is_control:
            return
        entry = self._producers.get(header.producer_id)
        if entry is None or header.producer_epoch > entry.epoch:
            entry = self._producers[header.producer_id] = _ProducerEntry(header.producer_epoch)
        entry.batches.append(
            BatchRange(
                header.base_sequence,
                last_sequence(header),
                first_offset,
                first_offset + header.last_offset_delta,
            )
        )

    def rebuild(self, log: LogLike, snapshot_path: Path | None = None) -> None:
        """Reload the table: from the snapshot (if it still fits the log), then from the
        headers of every batch written after it; without one, from the headers of the batches
        at most :data:`REBUILD_TAIL_OFFSETS` offsets back from the log end."""
        self._producers.clear()
        start = log.log_start_offset
        loaded = None if snapshot_path is None else self._load_snapshot(snapshot_path,
                                                                         log.next_offset)
        if loaded is not None:
            start = max(start, loaded)
        else:
            start = max(start, log.next_offset - REBUILD_TAIL_OFFSETS)
        for header in _headers_from(log, start):
            self.record(header, header.base_offset)

    def snapshot(self, end_offset: int) -> bytes:
        """The table as of ``end_offset``, encoded for :func:`write_snapshot`."""
        snapshot = _Snapshot(
            end_offset,
            [
                _SnapshotProducer(
                    pid,
                    e.epoch,
                    [[b.first_seq, b.last_seq, b.first_offset, b.last_offset] for b in e.batches],
                )
                for pid, e in self._producers.items()
            ],
        )
        return msgspec.json.encode(snapshot)

    def _load_snapshot(self, path: Path, log_end: int) -> int | None:
        """Load ``path`` if it describes a prefix of the log; returns the offset it covers."""
        try:
            snapshot = msgspec.json.decode(path.read_bytes(), type=_Snapshot)
        except (OSError, msgspec.DecodeError):
            return None
        if snapshot.end_offset > log_end:
            return None  # written for data a crash took away: rebuild from the log instead
        for producer in snapshot.producers:
            entry = self._producers[producer.producer_id] = _ProducerEntry(producer.epoch)
            entry.batches.extend(BatchRange(*batch) for batch in producer.batches)
        return snapshot.end_offset

    def producers(self) -> Iterable[int]:
        return self._producers.keys()


def write_snapshot(path: Path, snapshot: bytes) -> None:
    """Save an encoded table (:meth:`ProducerStateTable.snapshot`) atomically. It blocks on the
    disk: the partition runs it on the fsync pool."""
    replace_file(path, snapshot)


class _SnapshotProducer(msgspec.Struct, array_like=True):
    producer_id: int
    epoch: int
    batches: list[list[int]]


class _Snapshot(msgspec.Struct):
    end_offset: int
    producers: list[_SnapshotProducer]


def _headers_from(log: LogLike, offset: int) -> Iterable[BatchHeader]:
    """Headers of the batches from ``offset`` on; the log validated them when they were
    written or recovered, so only the headers are read here (no CRC pass)."""
    end = log.next_offset
    while offset < end:
        chunk = log.read(offset, _READ_CHUNK)
        pos, next_offset = 0, offset
        while len(chunk) - pos >= HEADER_SIZE:
            header = parse_header(chunk, pos)
            if header.size < HEADER_SIZE or pos + header.size > len(chunk):
                break
            if header.last_offset >= offset:
                yield header
            next_offset = header.last_offset + 1
            pos += header.size
        if next_offset == offset:
            return
        offset = next_offset
