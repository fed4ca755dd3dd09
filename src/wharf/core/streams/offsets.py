"""Committed consumer-group offsets, durable in an internal log.

How it works. Every commit appends one record per partition to the log at
``<data>/__consumer_offsets`` (key: group, topic, partition; value: offset, leader epoch,
metadata, commit time; a null value deletes) and waits for the group committer, so under
``--fsync always`` a commit has reached the disk when :meth:`OffsetStore.commit` returns. The
latest value of every key is kept in memory; opening the store replays the log. The same log
holds the group coordinator's membership snapshot of each Stable group (key: the group alone;
the value is opaque here, see ``groups/snapshot.py``).

The log only grows, so when it holds many more records than live keys it is rewritten:
the live entries go to ``__consumer_offsets.compact``, which is flushed, then the directories are
swapped with two renames (old -> ``.old``, new -> live) and the old one removed. Opening the
store finishes or discards a swap that a crash interrupted: a lone ``.compact`` next to the live
log is incomplete and is deleted; a ``.compact`` without a live log was complete (the live log
is only renamed away after the new one is flushed) and becomes the live log.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import msgspec

from wharf.core.clock import Clock
from wharf.core.config import FsyncPolicy
from wharf.core.durability import GroupCommitter, run_off_loop
from wharf.core.stats import HistogramFamily
from wharf.errors import StorageError
from wharf.storage.log import Log, LogConfig
from wharf.storage.record_batch import RecordInput, decode_records, iter_batches

__all__ = ["OffsetAndMetadata", "OffsetStore", "TopicPartition"]

log = logging.getLogger(__name__)

LOG_NAME = "__consumer_offsets"
_READ_CHUNK = 1 << 20
# Rewrite when the log holds this many records and more than twice the live entries.
COMPACT_MIN_RECORDS = 10_000


class TopicPartition(NamedTuple):
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class OffsetAndMetadata:
    offset: int
    metadata: str = ""
    leader_epoch: int = -1
    commit_timestamp_ms: int = 0


class _Value(msgspec.Struct, array_like=True):
    offset: int
    leader_epoch: int
    metadata: str
    timestamp_ms: int


# keys: [group, topic, partition] for an offset, [group] for the group's membership snapshot
_key_codec = msgspec.json.Decoder(list[str | int])
_value_codec = msgspec.json.Decoder(_Value)
_encode = msgspec.json.encode


class OffsetStore:
    """Committed offsets per (group, topic, partition); open with :meth:`open`."""

    def __init__(
        self,
        directory: Path,
        log: Log,
        committer: GroupCommitter,
        *,
        compact_min_records: int = COMPACT_MIN_RECORDS,
        fsync_latency: HistogramFamily[str] | None = None,
        executor: Executor | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._directory = directory
        self._fsync_latency = fsync_latency
        self._executor = executor
        self._clock = clock  # the periodic fsync's (``--fsync interval``)
        self._compact_min_records = compact_min_records
        self._log = log
        self._committer = committer
        self._offsets: dict[str, dict[TopicPartition, OffsetAndMetadata]] = {}
        self._group_metadata: dict[str, bytes] = {}
        self._records = 0  # records in the log, live or superseded
        self._lock = asyncio.Lock()  # one writer at a time (compaction swaps the log)
        self.compactions = 0

    @classmethod
    def open(
        cls,
        data_dir: Path,
        *,
        fsync: FsyncPolicy,
        fsync_interval_ms: int = 1000,
        compact_min_records: int = COMPACT_MIN_RECORDS,
        fsync_latency: HistogramFamily[str] | None = None,
        executor: Executor | None = None,
        clock: Clock | None = None,
    ) -> OffsetStore:
        """Open the store under ``data_dir``; ``executor`` is the broker's fsync pool (see
        core/durability.py), on which every fsync of the offsets log runs; ``clock`` times the
        periodic fsync under ``--fsync interval``."""
        directory = data_dir / LOG_NAME
        _finish_interrupted_swap(directory)
        log = Log.open(str(directory), _log_config())
        committer = GroupCommitter(
            log,
            fsync,
            interval_ms=fsync_interval_ms,
            durable_offset=log.durable_offset,
            executor=executor,
            kind="offsets",
            fsync_latency=fsync_latency,
            clock=clock,
        )
        store = cls(
            directory,
            log,
            committer,
            compact_min_records=compact_min_records,
            fsync_latency=fsync_latency,
            executor=executor,
            clock=clock,
        )
        store._replay()
        return store

    def start(self) -> None:
        self._committer.start()

    async def close(self) -> None:
        async with self._lock:
            await self._committer.close()
            await self._committer.run(self._log.close)  # flushes first

    # ------------------------------------------------------------------ queries

    def groups(self) -> list[str]:
        return sorted(self._offsets)

    def has_group(self, group_id: str) -> bool:
        return group_id in self._offsets

    def group_metadata(self) -> dict[str, bytes]:
        """The membership snapshot stored for each group (opaque to this store)."""
        return dict(self._group_metadata)

    def fetch(
        self, group_id: str, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        committed = self._offsets.get(group_id, {})
        if partitions is None:
            return dict(committed)
        return {tp: committed[tp] for tp in partitions if tp in committed}

    # ------------------------------------------------------------------ changes

    async def commit(
        self, group_id: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None:
        """Store ``offsets`` for ``group_id``; durable (per the fsync policy) on return."""
        await self._write(
            [(group_id, tp, entry) for tp, entry in offsets.items()],
        )

    async def store_group_metadata(self, group_id: str, snapshot: bytes | None) -> None:
        """Keep (or with ``None`` drop) the group coordinator's snapshot of a group."""
        if snapshot is None and group_id not in self._group_metadata:
            return
        await self._write([(group_id, None, snapshot)])

    async def delete(self, group_id: str, partitions: Iterable[TopicPartition]) -> None:
        committed = self._offsets.get(group_id, {})
        await self._write([(group_id, tp, None) for tp in partitions if tp in committed])

    async def delete_group(self, group_id: str) -> None:
        """Drop the group's offsets and membership snapshot."""
        entries: list[_Entry] = [(group_id, tp, None) for tp in self._offsets.get(group_id, {})]
        if group_id in self._group_metadata:
            entries.append((group_id, None, None))
        await self._write(entries)

    async def delete_topic(self, topic: str) -> None:
        """Forget every group's offsets for a deleted topic."""
        await self._write(
            [
                (group_id, tp, None)
                for group_id, committed in self._offsets.items()
                for tp in committed
                if tp.topic == topic
            ]
        )

    async def expire(
        self, now_ms: int, retention_ms: int, empty_since: Callable[[str], int | None]
    ) -> int:
        """Delete offsets older than ``retention_ms`` of groups without members.

        ``empty_since(group)`` gives when the group became empty (0 if it never had members,
        ``None`` if it has members now); an offset expires once both its commit time and that
        moment are ``retention_ms`` in the past. Returns how many offsets were removed.
        """
        expired: list[tuple[str, TopicPartition, None]] = []
        for group_id, committed in self._offsets.items():
            since = empty_since(group_id)
            if since is None:
                continue
            for tp, entry in committed.items():
                if max(entry.commit_timestamp_ms, since) + retention_ms <= now_ms:
                    expired.append((group_id, tp, None))
        await self._write(expired)
        return len(expired)

    async def _write(self, entries: Sequence[_Entry]) -> None:
        if not entries:
            return
        async with self._lock:
            records = [_record(group_id, tp, entry) for group_id, tp, entry in entries]
            info = self._log.append_records(records)
            for group_id, tp, entry in entries:
                self._apply(group_id, tp, entry)
            self._records += len(records)
            committer = self._committer
        committer.written()
        # wait outside the lock so that concurrent commits share one fsync
        await committer.wait_durable(info.last_offset + 1)
        if self._wants_compaction():
            async with self._lock:
                if self._wants_compaction():
                    await self._compact()

    def _wants_compaction(self) -> bool:
        return self._records >= self._compact_min_records and self._records > 2 * self._live()

    # ------------------------------------------------------------------ replay, compaction

    def _apply(
        self,
        group_id: str,
        tp: TopicPartition | None,
        entry: OffsetAndMetadata | bytes | None,
    ) -> None:
        if tp is None:
            if isinstance(entry, bytes):
                self._group_metadata[group_id] = entry
            else:
                self._group_metadata.pop(group_id, None)
        elif not isinstance(entry, OffsetAndMetadata):
            committed = self._offsets.get(group_id)
            if committed is not None:
                committed.pop(tp, None)
                if not committed:
                    del self._offsets[group_id]
        else:
            self._offsets.setdefault(group_id, {})[tp] = entry

    def _live(self) -> int:
        return sum(len(c) for c in self._offsets.values()) + len(self._group_metadata)

    def _replay(self) -> None:
        offset = self._log.log_start_offset
        end = self._log.next_offset
        while offset < end:
            chunk = self._log.read(offset, _READ_CHUNK)
            if not chunk:
                break
            for position, header in iter_batches(chunk):
                batch = chunk[position : position + header.size]
                for record in decode_records(batch):
                    if record.offset < offset or record.key is None:
                        continue
                    key = _key_codec.decode(record.key)
                    if len(key) == 1 and isinstance(key[0], str):
                        self._apply(key[0], None, record.value)
                    else:
                        group_id, topic, partition = _offset_key(key)
                        entry = None
                        if record.value is not None:
                            v = _value_codec.decode(record.value)
                            entry = OffsetAndMetadata(
                                v.offset, v.metadata, v.leader_epoch, v.timestamp_ms
                            )
                        self._apply(group_id, TopicPartition(topic, partition), entry)
                    self._records += 1
                offset = header.last_offset + 1

    async def _compact(self) -> None:
        """Rewrite the log with live entries only, then swap it in (see module docstring).

        A failed rewrite is logged and leaves the current log in use: compaction only saves
        space, and the commit that triggered it is already durable.
        """
        policy, interval_ms = self._committer.policy, self._committer.interval_ms
        await self._committer.close()
        live = [
            _record(group_id, tp, entry)
            for group_id, committed in self._offsets.items()
            for tp, entry in committed.items()
        ]
        live += [_record(g, None, snapshot) for g, snapshot in self._group_metadata.items()]
        try:
            await run_off_loop(self._executor, lambda: self._rewrite(live))
        except (OSError, StorageError):
            log.exception("rewriting %s failed; keeping the current log", self._directory)
        else:
            self._records = len(live)
            self.compactions += 1
        if self._log.closed:
            self._log = await run_off_loop(self._executor, self._reopen)
        self._committer = GroupCommitter(
            self._log,
            policy,
            interval_ms=interval_ms,
            durable_offset=self._log.durable_offset,
            executor=self._executor,
            kind="offsets",
            fsync_latency=self._fsync_latency,
            clock=self._clock,
        )
        self._committer.start()

    def _reopen(self) -> Log:
        """The log after a compaction (swapped in, or the old one when that failed)."""
        _finish_interrupted_swap(self._directory)
        return Log.open(str(self._directory), _log_config())

    def _rewrite(self, live: list[RecordInput]) -> None:
        fresh_dir = self._directory.with_name(LOG_NAME + ".compact")
        old_dir = self._directory.with_name(LOG_NAME + ".old")
        shutil.rmtree(fresh_dir, ignore_errors=True)
        try:
            fresh = Log.open(str(fresh_dir), _log_config())
            try:
                for start in range(0, len(live), 500):
                    fresh.append_records(live[start : start + 500])
            finally:
                fresh.close()
        except BaseException:
            shutil.rmtree(fresh_dir, ignore_errors=True)
            raise
        self._log.close()
        os.rename(self._directory, old_dir)
        os.rename(fresh_dir, self._directory)
        _fsync_dir(self._directory.parent)
        shutil.rmtree(old_dir)


_Entry = tuple[str, TopicPartition | None, OffsetAndMetadata | bytes | None]


def _offset_key(key: list[str | int]) -> tuple[str, str, int]:
    match key:
        case [str(group_id), str(topic), int(partition)]:
            return group_id, topic, partition
    raise StorageError(f"unexpected key {key!r} in the consumer offsets log")


def _record(
    group_id: str, tp: TopicPartition | None, entry: OffsetAndMetadata | bytes | None
) -> RecordInput:
    if tp is None:
        assert not isinstance(entry, OffsetAndMetadata)
        return RecordInput(key=_encode((group_id,)), value=entry)
    key = _encode((group_id, tp.topic, tp.partition))
    if not isinstance(entry, OffsetAndMetadata):
        return RecordInput(key=key, value=None)
    value = _Value(entry.offset, entry.leader_epoch, entry.metadata, entry.commit_timestamp_ms)
    return RecordInput(key=key, value=_encode(value), timestamp_ms=entry.commit_timestamp_ms)


def _log_config() -> LogConfig:
    return LogConfig(retention_ms=None, retention_bytes=None, segment_bytes=64 << 20)


def _finish_interrupted_swap(directory: Path) -> None:
    fresh_dir = directory.with_name(LOG_NAME + ".compact")
    old_dir = directory.with_name(LOG_NAME + ".old")
    if fresh_dir.exists():
        if directory.exists():
            shutil.rmtree(fresh_dir)
        else:
            os.rename(fresh_dir, directory)
            _fsync_dir(directory.parent)
    if old_dir.exists() and directory.exists():
        shutil.rmtree(old_dir)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
