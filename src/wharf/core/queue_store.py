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

How it works: recovery replays the state log (from its last snapshot on) and then reads the
message log from its start, keeping the records not settled. If a record was re-appended at the
tail (to free old segments) and the crash came before the old offset was settled, both copies
carry the same sequence number and the later one wins. The state log is compacted by writing a
snapshot and deleting the records before it. A non-durable queue uses a memory log and keeps no
state log. Durability waits go through the message log's :class:`GroupCommitter`.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from wharf.core.clock import Clock
from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.group_commit import GroupCommitter
from wharf.core.message import Message
from wharf.storage.interface import LogLike
from wharf.storage.log import Log, LogConfig
from wharf.storage.memory_log import MemoryLog
from wharf.storage.record_batch import Record, RecordInput, decode_records, iter_batches

__all__ = ["QueueStore", "StoredMessage", "open_store"]

_U64 = struct.Struct(">Q")
_SNAP_ENTRY = struct.Struct(">QQI")
_READ_CHUNK = 1 << 20
# Compact the state log after this many records since the last snapshot.
_SNAPSHOT_EVERY = 20_000


@dataclass(slots=True)
class StoredMessage:
    """A live record found by recovery."""

    offset: int
    seq: int
    message: Message
    expires_at: int | None
    delivery_count: int


def _pack_u64s(values: Sequence[int]) -> bytes:
    return struct.pack(f">{len(values)}Q", *values)


def _unpack_u64s(raw: bytes | None) -> tuple[int, ...]:
    if not raw:
        return ()
    return struct.unpack(f">{len(raw) // 8}Q", raw[: len(raw) // 8 * 8])


def iter_records(log: LogLike, start: int) -> Iterator[Record]:
    """Every record of ``log`` from offset ``start`` to its end."""
    offset = max(start, log.log_start_offset)
    end = log.next_offset
    while offset < end:
        chunk = log.read(offset, _READ_CHUNK)
        if not chunk:
            return
        last = offset
        for pos, header in iter_batches(chunk, max_batch_bytes=max(len(chunk), 61)):
            for record in decode_records(memoryview(chunk)[pos : pos + header.size]):
                if record.offset >= offset:
                    yield record
                last = max(last, record.offset)
        if last < offset:
            return
        offset = last + 1


def _decode_message(record: Record) -> tuple[int, Message, int | None, bool]:
    fields = dict(record.headers)
    seq = _U64.unpack(record.key or b"\0" * 8)[0]
    message = Message(
        (fields.get("e") or b"").decode("utf-8"),
        (fields.get("k") or b"").decode("utf-8"),
        fields.get("p") or b"\0\0",
        record.value or b"",
    )
    raw_expiry = fields.get("x")
    expires_at = _U64.unpack(raw_expiry)[0] if raw_expiry else None
    return seq, message, expires_at, "t" in fields


class QueueStore:
    """The logs of one queue; see the module docstring for the record layout."""

    def __init__(
        self,
        messages: LogLike,
        state: LogLike | None,
        committer: GroupCommitter | None,
        state_committer: GroupCommitter | None = None,
    ) -> None:
        self.messages = messages
        self.state = state
        self._committer = committer
        self._state_committer = state_committer
        self._since_snapshot = 0

    def start(self) -> None:
        """Start the periodic flushers (needs a running event loop)."""
        if self._committer is not None:
            self._committer.start()
        if self._state_committer is not None:
            self._state_committer.start()

    @property
    def durable(self) -> bool:
        return self.state is not None

    def append(
        self, seq: int, message: Message, expires_at: int | None, now_ms: int, *, keep: bool
    ) -> int:
        """Append one message; ``keep`` = survive a restart. Returns its offset."""
        headers: list[tuple[str, bytes | None]] = [
            ("e", message.exchange.encode("utf-8")),
            ("k", message.routing_key.encode("utf-8")),
            ("p", message.properties),
        ]
        if expires_at is not None:
            headers.append(("x", _U64.pack(max(expires_at, 0))))
        if not keep:
            headers.append(("t", b""))
        offset = self.messages.next_offset
        self.messages.append_records([RecordInput(_U64.pack(seq), message.body, headers, now_ms)])
        return offset

    async def wait_durable(self, offset: int) -> None:
        """Return once the record at ``offset`` is on disk (per the fsync policy)."""
        if self._committer is not None:
            await self._committer.wait_durable(offset + 1)

    def settle(self, offsets: Sequence[int]) -> None:
        if self.state is not None and offsets:
            self._write_state(b"A", _pack_u64s(offsets))

    def delivered(self, seqs: Sequence[int]) -> None:
        if self.state is not None and seqs:
            self._write_state(b"D", _pack_u64s(seqs))

    def _write_state(self, key: bytes, value: bytes) -> None:
        assert self.state is not None
        self.state.append_records([RecordInput(key, value)])
        self._since_snapshot += 1

    def needs_snapshot(self) -> bool:
        return self.state is not None and self._since_snapshot >= _SNAPSHOT_EVERY

    async def snapshot(self, live: Sequence[tuple[int, int, int]]) -> None:
        """Compact the state log: ``live`` = (offset, seq, delivery count) of every live record.

        The snapshot is made durable before the records it replaces are deleted."""
        if self.state is None:
            return
        value = _U64.pack(self.messages.next_offset) + b"".join(
            _SNAP_ENTRY.pack(o, s, c) for o, s, c in live
        )
        at = self.state.next_offset
        self.state.append_records([RecordInput(b"S", value)])
        if self._state_committer is not None:
            await self._state_committer.flush_now()
        self.state.delete_records_before(at)
        self._since_snapshot = 0

    def reclaim(self, first_live_offset: int) -> None:
        """Let the message log drop everything before ``first_live_offset``."""
        if first_live_offset > self.messages.log_start_offset:
            self.messages.delete_records_before(first_live_offset)

    def recover(self) -> list[StoredMessage]:
        """Live records in offset order; duplicates of a moved record are settled here."""
        boundary = 0
        live_below: set[int] = set()
        settled: set[int] = set()
        counts: dict[int, int] = {}
        if self.state is not None:
            for rec in iter_records(self.state, 0):
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
        by_seq: dict[int, StoredMessage] = {}
        duplicates: list[int] = []
        for rec in iter_records(self.messages, 0):
            o = rec.offset
            if o in settled or (o < boundary and o not in live_below):
                continue
            seq, message, expires_at, transient = _decode_message(rec)
            if transient:
                duplicates.append(o)  # not kept across restarts: settle it now
                continue
            previous = by_seq.get(seq)
            if previous is not None:
                duplicates.append(previous.offset)
            by_seq[seq] = StoredMessage(o, seq, message, expires_at, counts.get(seq, 0))
        self.settle(duplicates)
        return sorted(by_seq.values(), key=lambda m: m.offset)

    async def flush(self) -> None:
        """Make everything written so far durable (clean shutdown)."""
        if self._committer is not None:
            await self._committer.flush_now()
        if self._state_committer is not None:
            await self._state_committer.flush_now()

    async def destroy(self) -> None:
        """Close and delete the logs (queue deleted)."""
        await self._close_committers()
        self.messages.delete()
        if self.state is not None:
            self.state.delete()

    async def _close_committers(self) -> None:
        if self._committer is not None:
            await self._committer.close()
        if self._state_committer is not None:
            await self._state_committer.close()

    async def close(self) -> None:
        await self.flush()
        await self._close_committers()
        self.messages.close()
        if self.state is not None:
            self.state.close()


def open_store(path: Path | None, config: BrokerConfig, clock: Clock) -> QueueStore:
    """A durable store in directory ``path`` (recovered if present), or in memory when None.

    Queue logs are never trimmed by time or size retention: only settlement frees space.
    """
    log_config = LogConfig(
        segment_bytes=config.queue_segment_bytes, retention_ms=None, retention_bytes=None
    )
    if path is None:
        return QueueStore(MemoryLog(log_config, clock_ms=clock.now_ms), None, None)
    messages = Log.open(path / "messages", log_config, clock_ms=clock.now_ms)
    state = Log.open(path / "state", log_config, clock_ms=clock.now_ms)
    committer = GroupCommitter(
        messages,
        config.fsync,
        interval_ms=config.fsync_interval_ms,
        durable_offset=messages.next_offset,
    )
    # Settlements are never waited on; they reach the disk on this interval and at close.
    state_committer = GroupCommitter(
        state,
        FsyncPolicy.INTERVAL if config.fsync is not FsyncPolicy.NEVER else FsyncPolicy.NEVER,
        interval_ms=config.fsync_interval_ms,
        durable_offset=state.next_offset,
    )
    return QueueStore(messages, state, committer, state_committer)
