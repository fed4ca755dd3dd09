"""Topics: names, stable ids, partition counts and config overrides, persisted atomically.

How it works. The catalogue (name, uuid, partition count and config overrides of every topic)
is ``<data>/topics.json`` plus a journal of the changes since
(:mod:`wharf.core.snapshot_journal`: ``topics.<generation>.journal``, one record per created,
changed or deleted topic), so a change costs one small group-committed write however many
topics there are. Each partition's log is the directory ``<data>/topics/<name>-<index>``.
Changes are saved to the catalogue before the directories change: deleting a topic first drops
it from the catalogue, then removes its logs; on open, log directories the catalogue does not
list (left by a crash in between) are removed, so a re-created topic never inherits old data.

A change is made in memory only once the disk has it: changes take the manager's lock (one at a
time), record themselves in the catalogue's journal and wait for its write on the broker's
fsync pool; only then is the topic visible. Each change runs to its end even when its caller is
cancelled (a lost connection), so the catalogue, the logs and the topics in memory never part
ways half-way through one.

Partition logs are opened lazily (see :mod:`wharf.core.streams.partition`): a new partition has
no directory until its first record. A clean :meth:`TopicManager.close` writes every
partition's :class:`~wharf.core.streams.partition.LogSummary` to ``<data>/topic-summaries.json``;
the next open reads and deletes it, and opens no log, so a restart costs the same for 20 or
20,000 partitions. Without that file (after a crash) every partition with a directory must
be recovered before its positions are known: the open leaves them to recover
(``Partition.recovering``) and :meth:`TopicManager.start` recovers them in the background, a
batch to a job of the fsync pool (each log opened and closed again, its summary kept), so the
listeners do not wait for them; a partition used first is opened by that use. The
maintenance pass closes the logs of partitions that did
nothing since the pass before (:meth:`TopicManager.unload_idle`), so open files follow the
partitions in use, not the partitions held.

Names follow Kafka's rules: 1 to 249 characters out of ``[a-zA-Z0-9._-]``, not ``.`` or ``..``,
and not colliding with an existing name that differs only by ``.`` versus ``_``.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import logging
import os
import re
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial, wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import msgspec

from wharf.core.clean_stop import save_summary, take_summary
from wharf.core.clock import Clock
from wharf.core.config import BrokerConfig, default_open_logs
from wharf.core.durability import run_off_loop, run_to_end
from wharf.core.snapshot_journal import SnapshotJournal
from wharf.core.stats import HistogramFamily
from wharf.core.streams.errors import (
    ErrorCode,
    InvalidPartitionsError,
    InvalidTopicError,
    StreamsError,
    TopicExistsError,
    UnknownTopicError,
)
from wharf.core.streams.partition import EMPTY, LogSummary, Partition, wait_for_any
from wharf.core.streams.topic_config import ConfigEntry, TopicConfig, describe, parse_overrides
from wharf.core.streams.view import JobCounts, PartitionView
from wharf.errors import StorageError
from wharf.storage.checkpoint import fsync_dir

__all__ = [
    "MAX_PARTITIONS",
    "Topic",
    "TopicManager",
    "replay_catalogue",
    "validate_topic_name",
]

log = logging.getLogger(__name__)

CATALOGUE = "topics"  # topics.json and topics.<generation>.journal
SUMMARIES = "topic-summaries.json"
LOGS_DIR = "topics"
# Logs the eviction closes at a time (each close waits on the fsync pool).
_EVICT_AT_ONCE = 16
# How often an open held back by the limit looks again for logs that became idle.
_ROOM_POLL_S = 0.005
# Logs the recovery after a crash opens and closes in one job of the fsync pool: one job after
# another (the work is mostly Python, which threads would only share), each short enough that
# a use of a partition in it waits little.
_RECOVER_BATCH = 32
# The catalogue's journal is compacted once larger than its snapshot and than this.
COMPACT_MIN_BYTES = 1 << 20
MAX_NAME_LENGTH = 249
MAX_PARTITIONS = 10_000
RESERVED_NAMES = frozenset({"__consumer_offsets", "__transaction_state"})
_NAME = re.compile(r"[a-zA-Z0-9._-]+")
_LOG_DIR = re.compile(r"(.+)-(\d+)")

_P = ParamSpec("_P")
_R = TypeVar("_R")


def _to_end(
    change: Callable[_P, Coroutine[Any, Any, _R]],
) -> Callable[_P, Coroutine[Any, Any, _R]]:
    """Run the decorated change to its end even if its caller is cancelled (see the module
    docstring)."""

    @wraps(change)
    async def run(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        return await run_to_end(change(*args, **kwargs))

    return run


class _TopicRecord(msgspec.Struct):
    name: str
    id: str
    partitions: int
    configs: dict[str, str] = {}


class _Catalogue(msgspec.Struct):
    version: int
    topics: list[_TopicRecord]


# A clean close's partition summaries, by log directory name.
_Summaries = dict[str, tuple[int, int, int, int, int]]


@dataclass(eq=False)
class Topic:
    name: str
    topic_id: uuid.UUID
    overrides: dict[str, str]
    config: TopicConfig
    partitions: list[Partition] = field(default_factory=list)

    @property
    def partition_count(self) -> int:
        return len(self.partitions)


def validate_topic_name(name: str) -> None:
    """Raise :class:`InvalidTopicError` unless ``name`` is a legal Kafka topic name."""
    if not name or name in (".", ".."):
        raise InvalidTopicError(f"illegal topic name {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidTopicError(f"topic name is longer than {MAX_NAME_LENGTH} characters")
    if not _NAME.fullmatch(name):
        raise InvalidTopicError(
            f"topic name {name!r} may only contain ASCII letters, digits, '.', '_' and '-'"
        )
    if name in RESERVED_NAMES:
        raise InvalidTopicError(f"topic name {name!r} is reserved")


class TopicManager:
    """Every topic of the broker; open with :meth:`open`."""

    def __init__(
        self,
        data_dir: Path,
        config: BrokerConfig,
        executor: Executor | None = None,
        clock: Clock | None = None,
        fsync_latency: HistogramFamily[str] | None = None,
    ) -> None:
        self._data_dir = data_dir
        self._clock = clock
        self._logs_dir = data_dir / LOGS_DIR
        self._config = config
        self._executor = executor
        self._fsync_latency = fsync_latency
        self._topics: dict[str, Topic] = {}
        self._by_id: dict[uuid.UUID, Topic] = {}
        # The catalogue as saved (or being saved, under the lock), and its names by the key
        # that makes two names collide.
        self._catalogue: dict[str, _TopicRecord] = {}
        self._clashes: dict[str, str] = {}
        self._journal = SnapshotJournal(
            data_dir, CATALOGUE, self._snapshot, replay_catalogue, executor,
            compact_min_bytes=COMPACT_MIN_BYTES,
        )  # fmt: skip
        self._lock = asyncio.Lock()
        self._started = False
        self._activity: dict[Partition, int] = {}  # open partitions' activity at the last pass
        # Partitions whose logs are open, oldest first (the eviction's clock hand).
        self._open_logs: dict[Partition, None] = {}
        self._max_open_logs = config.open_partition_logs or default_open_logs()
        self._evicting: asyncio.Task[None] | None = None
        self._opens_under_way = 0
        self._moved = asyncio.Event()  # replaced each time it is set (see _move)
        # partitions a crash left to recover, and the background task opening them
        self._unrecovered: builtins.list[Partition] = []
        self._recovering: asyncio.Task[None] | None = None

    @classmethod
    def open(
        cls,
        data_dir: Path,
        config: BrokerConfig,
        executor: Executor | None = None,
        fsync_latency: HistogramFamily[str] | None = None,
        clock: Clock | None = None,
    ) -> TopicManager:
        """``fsync_latency``: the broker's fsync histograms, which the partitions' group
        commits record into."""
        manager = cls(data_dir, config, executor, clock=clock, fsync_latency=fsync_latency)
        manager._logs_dir.mkdir(parents=True, exist_ok=True)
        counts: dict[str, int] = {}
        for record in manager._load_catalogue():
            overrides = dict(record.configs)
            topic = Topic(
                record.name,
                uuid.UUID(record.id),
                overrides,
                TopicConfig.resolve(config.topic_defaults, overrides),
            )
            manager._register(topic)
            manager._remember(record)
            counts[topic.name] = record.partitions
        existing = manager._remove_unlisted_logs(counts)
        summaries = manager._take_summaries()
        for name, count in counts.items():
            topic = manager._topics[name]
            for i in range(count):
                summary = manager._opening_summary(topic, i, existing, summaries)
                partition = manager._partition(topic, i, summary)
                topic.partitions.append(partition)
                if summary is None:
                    manager._unrecovered.append(partition)
        return manager

    def _opening_summary(
        self, topic: Topic, index: int, existing: set[str], summaries: _Summaries | None
    ) -> LogSummary | None:
        """How partition ``index`` of ``topic`` opens with the manager: EMPTY without a log
        directory, its saved summary after a clean close; otherwise (after a crash: None)
        its log is left to recover (see the module docstring)."""
        name = f"{topic.name}-{index}"
        if name not in existing:
            return EMPTY
        if summaries is not None and name in summaries:
            return LogSummary(*summaries[name])
        return None

    def start(self) -> None:
        self._started = True
        for topic in self._topics.values():
            for partition in topic.partitions:
                partition.start()
        self._evict_soon()
        if self._unrecovered:
            self._recovering = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        """Recover the partitions a crash left, a batch at a time on the fsync pool (a
        failure is logged and leaves that partition to be opened by its first use)."""
        began = time.perf_counter()
        pending, self._unrecovered = self._unrecovered, []
        for first in range(0, len(pending), _RECOVER_BATCH):
            jobs = [
                (partition, recovery)
                for partition in pending[first : first + _RECOVER_BATCH]
                if (recovery := partition.begin_recovery()) is not None
            ]
            if not jobs:
                continue
            await run_off_loop(self._executor, partial(_recover_batch, jobs))
            for partition, recovery in jobs:
                try:
                    partition.end_recovery(recovery)
                except (StorageError, StreamsError) as exc:
                    log.error("cannot recover the log of %s-%d (it is opened at its first use):"
                              " %s", partition.topic, partition.index, exc)
        log.info("recovered the logs of %d partitions left by a crash in %.2f s", len(pending),
                 time.perf_counter() - began)

    async def recovered(self) -> None:
        """Return once the partitions a crash left are recovered (see the module docstring)."""
        if self._recovering is not None:
            await asyncio.wait([self._recovering])  # (however it ends: a close cancels it)

    async def close(self) -> None:
        """Close every log, then save their summaries (a clean close: the next open opens no
        log)."""
        if self._recovering is not None:
            self._recovering.cancel()
            await asyncio.gather(self._recovering, return_exceptions=True)
        if self._evicting is not None:
            await self._evicting
        for topic in self._topics.values():
            for partition in topic.partitions:
                await partition.close()
        await self._journal.close()
        summaries: _Summaries = {}
        for topic in self._topics.values():
            for partition in topic.partitions:
                if partition.recovering:
                    continue  # not opened since a crash: the next start recovers it again
                summary = partition.summary
                if summary != EMPTY:
                    summaries[f"{topic.name}-{partition.index}"] = (
                        summary.log_start_offset, summary.log_end_offset, summary.size_bytes,
                        summary.oldest_bytes, summary.oldest_max_timestamp,
                    )  # fmt: skip
        await save_summary(self._data_dir / SUMMARIES, summaries, self._executor,
                           "every partition log")  # fmt: skip

    # ------------------------------------------------------------------ lookups

    def get(self, name: str) -> Topic:
        topic = self._topics.get(name)
        if topic is None:
            raise UnknownTopicError(f"no topic {name!r}")
        return topic

    def find(self, name: str) -> Topic | None:
        return self._topics.get(name)

    def by_id(self, topic_id: uuid.UUID) -> Topic | None:
        return self._by_id.get(topic_id)

    def list(self) -> builtins.list[Topic]:
        return sorted(self._topics.values(), key=lambda t: t.name)

    def partition(self, name: str, index: int) -> Partition:
        topic = self.get(name)
        if not 0 <= index < len(topic.partitions):
            raise UnknownTopicError(f"topic {name!r} has no partition {index}")
        return topic.partitions[index]

    def partition_exists(self, name: str, index: int) -> bool:
        topic = self._topics.get(name)
        return topic is not None and 0 <= index < len(topic.partitions)

    def partitions(self) -> Iterable[Partition]:
        for topic in self._topics.values():
            yield from topic.partitions

    async def reload(self) -> None:
        """Nothing to do: this manager's memory is the catalogue."""

    def engine_counters(self) -> Mapping[str, int]:
        """None on one node (see TopicsView)."""
        return {}

    def job_counters(self) -> Mapping[str, JobCounts]:
        """None on one node (see TopicsView)."""
        return {}

    async def wait_for_any(
        self, positions: Sequence[tuple[PartitionView, int]], timeout_s: float
    ) -> bool:
        """:func:`~wharf.core.streams.partition.wait_for_any` over this manager's partitions."""
        return await wait_for_any(
            [(p, offset) for p, offset in positions if isinstance(p, Partition)], timeout_s
        )

    # ------------------------------------------------------------------ changes

    @_to_end
    async def create(
        self,
        name: str,
        partitions: int | None = None,
        configs: Mapping[str, str | None] | None = None,
        *,
        replication_factor: int = -1,
        validate_only: bool = False,
    ) -> Topic:
        """Create a topic (``partitions`` and ``replication_factor`` -1 or None: defaults)."""
        count = self._config.topic_defaults.partitions if partitions in (None, -1) else partitions
        assert count is not None
        async with self._lock:
            validate_topic_name(name)
            if name in self._topics:
                raise TopicExistsError(f"topic {name!r} already exists")
            existing = self._clashes.get(_collision_key(name))
            if existing is not None:
                raise InvalidTopicError(
                    f"topic {name!r} collides with {existing!r} ('.' and '_' are the same)"
                )
            if not 1 <= count <= MAX_PARTITIONS:
                raise InvalidPartitionsError(
                    f"partitions must be between 1 and {MAX_PARTITIONS}, not {count}"
                )
            if replication_factor not in (-1, 1):
                raise StreamsError(
                    f"replication factor {replication_factor} is larger than the 1 broker",
                    ErrorCode.INVALID_REPLICATION_FACTOR,
                )
            overrides = parse_overrides(configs or {})
            config = TopicConfig.resolve(self._config.topic_defaults, overrides)
            topic = Topic(name, uuid.uuid4(), overrides, config)
            if validate_only:
                return topic
            await self._save(name, _record(topic, count))
            topic.partitions = self._new_partitions(topic, range(count))
            self._register(topic)
            return topic

    async def ensure(self, name: str) -> Topic:
        """The topic, created with defaults if missing and ``auto_create_topics`` is on."""
        topic = self._topics.get(name)
        if topic is not None:
            return topic
        if not self._config.auto_create_topics:
            raise UnknownTopicError(f"no topic {name!r} (auto-creation is off)")
        try:
            return await self.create(name)
        except TopicExistsError:
            return self.get(name)

    @_to_end
    async def delete(self, name: str) -> Topic:
        """Delete a topic and its data; returns what was deleted."""
        async with self._lock:
            topic = self.get(name)
            await self._save(name, None)
            self._unregister(topic)
            for partition in topic.partitions:
                self._open_logs.pop(partition, None)
                await partition.delete(sync=False)
            # One fsync for every removed directory. The catalogue no longer lists them, so a
            # crash before it, or a failed fsync, leaves directories that the next open removes.
            try:
                await run_off_loop(self._executor, partial(fsync_dir, os.fspath(self._logs_dir)))
            except OSError as exc:
                log.warning("deleted topic %r: syncing %s failed: %s", name, self._logs_dir, exc)
            return topic

    @_to_end
    async def add_partitions(self, name: str, total: int, *, validate_only: bool = False) -> Topic:
        """Grow ``name`` to ``total`` partitions (CreatePartitions: the new total count)."""
        async with self._lock:
            topic = self.get(name)
            current = len(topic.partitions)
            if total <= current:
                raise InvalidPartitionsError(
                    f"topic {name!r} has {current} partitions; the new count must be larger, "
                    f"not {total}"
                )
            if total > MAX_PARTITIONS:
                raise InvalidPartitionsError(f"at most {MAX_PARTITIONS} partitions per topic")
            if validate_only:
                return topic
            await self._save(name, _record(topic, total))
            topic.partitions.extend(self._new_partitions(topic, range(current, total)))
            return topic

    def describe_configs(self, name: str) -> builtins.list[ConfigEntry]:
        topic = self.get(name)
        return describe(self._config.topic_defaults, topic.overrides)

    @_to_end
    async def alter_configs(
        self,
        name: str,
        set_configs: Mapping[str, str | None] | None = None,
        delete: Iterable[str] = (),
        *,
        replace: bool = False,
        validate_only: bool = False,
    ) -> Topic:
        """Change config overrides: ``replace`` = AlterConfigs (the given set becomes the whole
        set), otherwise IncrementalAlterConfigs (set these, delete those)."""
        async with self._lock:
            topic = self.get(name)
            overrides = {} if replace else dict(topic.overrides)
            for key in delete:
                overrides.pop(key, None)
            overrides.update(parse_overrides(set_configs or {}))
            overrides = parse_overrides(overrides)
            config = TopicConfig.resolve(self._config.topic_defaults, overrides)
            if validate_only:
                return topic
            await self._save(name, _record(topic, len(topic.partitions), overrides))
            topic.overrides, topic.config = overrides, config
            for partition in topic.partitions:
                partition.update_config(config)
            return topic

    def enforce_retention(self, now_ms: int) -> int:
        """Apply retention to every partition; returns the number of segments deleted."""
        return sum(p.enforce_retention(now_ms) for p in self.partitions())

    async def unload_idle(self) -> int:
        """Close the logs of partitions that did nothing since the last call (and have nobody
        waiting on them); returns how many were closed."""
        seen, closed = self._activity, 0
        self._activity = {}
        for partition in list(self._open_logs):
            activity = partition.messages_in + partition.bytes_out + partition.fsyncs
            if seen.get(partition) == activity and partition.idle:
                closed += await self._unload(partition)
            else:
                self._activity[partition] = activity
        return closed

    def _opened(self, partition: Partition) -> None:
        """A partition's log opened: note it, and close others when too many are open."""
        self._open_logs[partition] = None
        if self._started:
            self._evict_soon()

    @contextlib.asynccontextmanager
    async def _room_to_open(self) -> AsyncIterator[None]:
        """Held around each log open: holds it back while the open logs and the opens under
        way reach twice the limit (opening is quicker than closing: a burst of first records
        into many partitions would otherwise outrun the eviction towards the open-file
        limit). It waits for an open or a close, and looks again every few milliseconds, as
        logs too busy to close a moment ago become idle when their writes are flushed."""
        while len(self._open_logs) + self._opens_under_way >= 2 * self._max_open_logs:
            self._evict_soon()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._moved.wait(), _ROOM_POLL_S)
        self._opens_under_way += 1
        try:
            yield
        finally:
            self._opens_under_way -= 1
            self._move()

    def _move(self) -> None:
        """Wake the opens held back (something opened, closed or stopped)."""
        self._moved.set()
        self._moved = asyncio.Event()

    def _evict_soon(self) -> None:
        if len(self._open_logs) > self._max_open_logs and self._evicting is None:
            self._evicting = asyncio.get_running_loop().create_task(self._evict())

    async def _evict(self) -> None:
        """Close logs until at most the limit are open, second chance style: going round
        from the oldest opened, a log used since the hand last passed it is spared (and
        passed again later); an unused, idle one is closed (it counts as open until its
        close begins, for :meth:`_room_to_open`)."""
        try:
            spared = 0
            while len(self._open_logs) > self._max_open_logs and spared <= len(self._open_logs):
                wanted = min(len(self._open_logs) - self._max_open_logs, _EVICT_AT_ONCE)
                victims: builtins.list[Partition] = []
                for partition in list(self._open_logs):  # oldest first
                    if len(victims) >= wanted or spared > len(self._open_logs):
                        break
                    if not partition.is_open:
                        del self._open_logs[partition]
                    elif partition.used or not partition.idle:
                        partition.used = False
                        del self._open_logs[partition]
                        self._open_logs[partition] = None  # to the back: the hand moves on
                        spared += 1
                    else:
                        spared = 0
                        victims.append(partition)
                await asyncio.gather(*(self._unload(p) for p in victims))
                self._move()
        finally:
            self._evicting = None
            self._move()

    async def _unload(self, partition: Partition) -> int:
        """Close ``partition``'s log (1), unless something opened it again meanwhile (0)."""
        self._open_logs.pop(partition, None)
        try:
            await partition.unload()
        except StorageError:
            log.exception("closing the log of %s-%d failed", partition.topic, partition.index)
        if partition.is_open:
            self._open_logs[partition] = None
            return 0
        return 1

    # ------------------------------------------------------------------ internals

    def _register(self, topic: Topic) -> None:
        self._topics[topic.name] = topic
        self._by_id[topic.topic_id] = topic

    def _unregister(self, topic: Topic) -> None:
        self._topics.pop(topic.name, None)
        self._by_id.pop(topic.topic_id, None)

    def _new_partitions(self, topic: Topic, indexes: range) -> builtins.list[Partition]:
        """Partitions of a topic being created or grown: empty, their logs made by their
        first record."""
        partitions = [self._partition(topic, i, EMPTY) for i in indexes]
        if self._started:
            for partition in partitions:
                partition.start()
        return partitions

    def _partition(self, topic: Topic, index: int, summary: LogSummary | None) -> Partition:
        return Partition(
            topic.name,
            index,
            self._logs_dir / f"{topic.name}-{index}",
            topic.config,
            fsync=self._config.fsync,
            fsync_interval_ms=self._config.fsync_interval_ms,
            executor=self._executor,
            clock=self._clock,
            fsync_latency=self._fsync_latency,
            summary=summary,
            on_open=self._opened,
            room=self._room_to_open,
            recover_later=summary is None,
        )

    def _load_catalogue(self) -> builtins.list[_TopicRecord]:
        data = self._journal.open()
        if data is None:
            return []
        try:
            return msgspec.convert(data, type=_Catalogue).topics
        except msgspec.ValidationError as exc:
            raise StorageError(f"topic catalogue in {self._data_dir} is unreadable: {exc}") from exc

    def _snapshot(self) -> dict[str, Any]:
        """The catalogue as saved and being saved, for a compaction of its journal."""
        ordered = [msgspec.to_builtins(self._catalogue[n]) for n in sorted(self._catalogue)]
        return {"version": 1, "topics": ordered}

    def _remember(self, record: _TopicRecord) -> None:
        self._catalogue[record.name] = record
        self._clashes[_collision_key(record.name)] = record.name

    def _forget(self, name: str) -> None:
        self._catalogue.pop(name, None)
        self._clashes.pop(_collision_key(name), None)

    async def _save(self, name: str, record: _TopicRecord | None) -> None:
        """Save ``name``'s new catalogue entry (None: deleted) durably; on failure the
        catalogue stays as it was (the journal's next write is a compaction from it)."""
        before = self._catalogue.get(name)
        if record is None:
            self._forget(name)
            self._journal.record({"op": "topic.delete", "name": name})
        else:
            self._remember(record)
            self._journal.record({"op": "topic", **msgspec.to_builtins(record)})
        try:
            await self._journal.wait_durable()
        except Exception:
            self._forget(name)
            if before is not None:
                self._remember(before)
            raise

    def _take_summaries(self) -> _Summaries | None:
        """What a clean close saved (None without it), deleted from the disk."""
        return take_summary(self._data_dir / SUMMARIES, _Summaries, "every partition log")

    def _remove_unlisted_logs(self, counts: Mapping[str, int]) -> set[str]:
        """Remove log directories of no listed partition; returns the names of the others."""
        kept: set[str] = set()
        for entry in self._logs_dir.iterdir():
            match = _LOG_DIR.fullmatch(entry.name)
            keep = (
                match is not None
                and entry.is_dir()
                and int(match.group(2)) < counts.get(match.group(1), 0)
            )
            if keep:
                kept.add(entry.name)
            elif entry.is_dir():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        fsync_dir(os.fspath(self._logs_dir))
        return kept




def _recover_batch(
    jobs: Sequence[tuple[Partition, concurrent.futures.Future[LogSummary]]],
) -> None:
    """On the fsync pool: each partition's :meth:`Partition.recover_into`, in turn."""
    for partition, recovery in jobs:
        partition.recover_into(recovery)


def replay_catalogue(
    data: dict[str, Any], changes: builtins.list[dict[str, Any]]
) -> dict[str, Any]:
    """The catalogue ``data`` with the journal's ``changes`` applied."""
    topics = {t["name"]: t for t in data.get("topics", [])}
    for change in changes:
        op = change.pop("op", None)
        if op == "topic":
            topics[change["name"]] = change
        elif op == "topic.delete":
            topics.pop(change["name"], None)
        else:
            raise StorageError(f"unknown topic catalogue record {op!r}")
    return {"version": data.get("version", 1), "topics": list(topics.values())}


def _record(
    topic: Topic, partitions: int, overrides: Mapping[str, str] | None = None
) -> _TopicRecord:
    """``topic``'s catalogue entry with ``partitions`` (and ``overrides``, if given)."""
    configs = topic.overrides if overrides is None else overrides
    return _TopicRecord(topic.name, str(topic.topic_id), partitions, dict(sorted(configs.items())))


def _collision_key(name: str) -> str:
    return name.replace(".", "_")
