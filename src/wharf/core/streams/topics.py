"""Topics: names, stable ids, partition counts and config overrides, persisted atomically.

How it works. The catalogue lives in ``<data>/topics.json`` (name, uuid, partition count and
config overrides of every topic), rewritten whole on each change: temporary file, fsync,
rename, fsync of the directory, so a crash leaves the old or the new catalogue, never a mix.
Each partition's log is the directory ``<data>/topics/<name>-<index>``. Changes are written to
the catalogue before the directories change: deleting a topic first drops it from the
catalogue, then removes its logs; on open, log directories the catalogue does not list (left by
a crash in between) are removed, so a re-created topic never inherits old data.

A change is made in memory only once the disk has it: the new catalogue is encoded on the
event-loop thread and written on the broker's fsync pool (changes take the manager's lock, so
one write runs at a time), and new partition logs are opened on the pool too, so no fsync runs
on the event-loop thread. A topic being created is not visible until its logs are open. Each
change runs to its end even when its caller is cancelled (a lost connection), so the catalogue,
the logs and the topics in memory never part ways half-way through one.

Names follow Kafka's rules: 1 to 249 characters out of ``[a-zA-Z0-9._-]``, not ``.`` or ``..``,
and not colliding with an existing name that differs only by ``.`` versus ``_``.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import re
import shutil
import uuid
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from functools import partial, wraps
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import msgspec

from wharf.core.clock import Clock
from wharf.core.config import BrokerConfig
from wharf.core.durability import run_off_loop, run_to_end
from wharf.core.stats import HistogramFamily
from wharf.core.streams.errors import (
    ErrorCode,
    InvalidPartitionsError,
    InvalidTopicError,
    StreamsError,
    TopicExistsError,
    UnknownTopicError,
)
from wharf.core.streams.partition import Partition, wait_for_any
from wharf.core.streams.topic_config import ConfigEntry, TopicConfig, describe, parse_overrides
from wharf.core.streams.view import JobCounts, PartitionView
from wharf.errors import StorageError
from wharf.storage.checkpoint import fsync_dir, replace_file

__all__ = ["MAX_PARTITIONS", "Topic", "TopicManager", "validate_topic_name"]

CATALOGUE = "topics.json"
LOGS_DIR = "topics"
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
        self._lock = asyncio.Lock()
        self._started = False

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
            counts[topic.name] = record.partitions
        manager._remove_unlisted_logs(counts)
        for name, count in counts.items():
            topic = manager._topics[name]
            topic.partitions = [manager._open_partition(topic, i) for i in range(count)]
        return manager

    def start(self) -> None:
        self._started = True
        for topic in self._topics.values():
            for partition in topic.partitions:
                partition.start()

    async def close(self) -> None:
        for topic in self._topics.values():
            for partition in topic.partitions:
                await partition.close()

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
            clash = _collision_key(name)
            for existing in self._topics:
                if _collision_key(existing) == clash:
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
            records = self._records()
            records[name] = _record(topic, count)
            await self._save_catalogue(records)
            topic.partitions = await self._open_partitions(topic, range(count))
            self._register(topic)
            if self._started:
                for partition in topic.partitions:
                    partition.start()
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
            records = self._records()
            del records[name]
            await self._save_catalogue(records)
            self._unregister(topic)
            for partition in topic.partitions:
                await partition.delete()
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
            records = self._records()
            records[name] = _record(topic, total)
            await self._save_catalogue(records)
            added = await self._open_partitions(topic, range(current, total))
            topic.partitions.extend(added)
            if self._started:
                for partition in added:
                    partition.start()
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
            records = self._records()
            records[name] = _record(topic, len(topic.partitions), overrides)
            await self._save_catalogue(records)
            topic.overrides, topic.config = overrides, config
            for partition in topic.partitions:
                partition.update_config(config)
            return topic

    def enforce_retention(self, now_ms: int) -> int:
        """Apply retention to every partition; returns the number of segments deleted."""
        return sum(p.enforce_retention(now_ms) for p in self.partitions())

    # ------------------------------------------------------------------ internals

    def _register(self, topic: Topic) -> None:
        self._topics[topic.name] = topic
        self._by_id[topic.topic_id] = topic

    def _unregister(self, topic: Topic) -> None:
        self._topics.pop(topic.name, None)
        self._by_id.pop(topic.topic_id, None)

    async def _open_partitions(self, topic: Topic, indexes: range) -> builtins.list[Partition]:
        """Open new partition logs on the fsync pool (creating a log fsyncs its directory)."""
        return await run_off_loop(
            self._executor, lambda: [self._open_partition(topic, i, fresh=True) for i in indexes]
        )

    def _open_partition(self, topic: Topic, index: int, *, fresh: bool = False) -> Partition:
        path = self._logs_dir / f"{topic.name}-{index}"
        if fresh and path.exists():
            shutil.rmtree(path)
        return Partition(
            topic.name,
            index,
            path,
            topic.config,
            fsync=self._config.fsync,
            fsync_interval_ms=self._config.fsync_interval_ms,
            executor=self._executor,
            clock=self._clock,
            fsync_latency=self._fsync_latency,
        )

    def _load_catalogue(self) -> builtins.list[_TopicRecord]:
        path = self._data_dir / CATALOGUE
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return []
        try:
            return msgspec.json.decode(raw, type=_Catalogue).topics
        except msgspec.DecodeError as exc:
            raise StorageError(f"topic catalogue {path} is unreadable: {exc}") from exc

    def _records(self) -> dict[str, _TopicRecord]:
        """The catalogue as it is now, by topic name (a copy to change and save)."""
        return {t.name: _record(t, len(t.partitions)) for t in self._topics.values()}

    async def _save_catalogue(self, records: Mapping[str, _TopicRecord]) -> None:
        """Replace the catalogue with ``records`` (encoded here, written on the fsync pool)."""
        ordered = [records[name] for name in sorted(records)]
        data = msgspec.json.format(msgspec.json.encode(_Catalogue(1, ordered)), indent=2)
        await run_off_loop(self._executor, partial(_write_catalogue, self._data_dir, data))

    def _remove_unlisted_logs(self, counts: Mapping[str, int]) -> None:
        for entry in self._logs_dir.iterdir():
            match = _LOG_DIR.fullmatch(entry.name)
            keep = (
                match is not None
                and entry.is_dir()
                and int(match.group(2)) < counts.get(match.group(1), 0)
            )
            if not keep:
                if entry.is_dir():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        fsync_dir(os.fspath(self._logs_dir))


def _record(
    topic: Topic, partitions: int, overrides: Mapping[str, str] | None = None
) -> _TopicRecord:
    """``topic``'s catalogue entry with ``partitions`` (and ``overrides``, if given)."""
    configs = topic.overrides if overrides is None else overrides
    return _TopicRecord(topic.name, str(topic.topic_id), partitions, dict(sorted(configs.items())))


def _write_catalogue(data_dir: Path, data: bytes) -> None:
    """Atomically replace ``<data_dir>/topics.json`` (blocks on the disk)."""
    replace_file(data_dir / CATALOGUE, data)


def _collision_key(name: str) -> str:
    return name.replace(".", "_")
