"""The topics of a cluster, as one node serves them: the catalogue in PostgreSQL
(:mod:`wharf.cluster.catalog`), cached in memory for the synchronous lookups.

How it works. Changes (create, delete, partitions, configs) are checked here first, with the
single-node rules (:func:`~wharf.core.streams.topics.validate_topic_name`, the partition bounds,
``topic_config``'s validation), then written to the catalogue in one fenced transaction each;
the catalogue's unique indexes decide between nodes racing on one name. Errors become the
streams errors the local manager raises, and a lost node lease NOT_CONTROLLER (retriable).

The cache (name -> :class:`ClusterTopic` with its :class:`ClusterPartition` objects, which keep
their counters and positions across refreshes) is read whole from the catalogue:

- at open, before the node serves anything;
- after each change this node makes, before the change is answered;
- when any node's change commits: the catalogue's writes ``pg_notify('wharf_catalog', ...)``
  in their transactions and :class:`~wharf.cluster.catalog_listener.CatalogListener` hears it
  on a connection of its own (and re-reads after reconnecting, since notifications sent while
  it was down are lost);
- every ``refresh_interval`` seconds (2 s), the safety net;
- when a request names a topic or partition the cache lacks (:meth:`reload`): so a topic
  created on another node is usable at once, whatever the notification's delay.

Concurrent reloads share reads: a caller waits for a read that began after it asked.
DeleteRecords goes to :func:`wharf.cluster.streams.retention.delete_records` on this node's
lease; retention is a leased background job's
(:mod:`~wharf.core.streams.cluster_maintenance`), which reads the topics' configs from here.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from wharf.cluster import catalog
from wharf.cluster.catalog_listener import CatalogListener
from wharf.cluster.nodes import LeaseLostError
from wharf.cluster.streams import retention
from wharf.cluster.streams.reader import StreamReader
from wharf.cluster.streams.watermarks import Watermarks
from wharf.cluster.streams.writer import StreamWriter
from wharf.core.clock import Clock
from wharf.core.config import BrokerConfig
from wharf.core.streams.cluster_partition import ClusterPartition, lease_lost
from wharf.core.streams.errors import (
    ErrorCode,
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidTopicError,
    StreamsError,
    TopicExistsError,
    UnknownTopicError,
)
from wharf.core.streams.topic_config import ConfigEntry, TopicConfig, describe, parse_overrides
from wharf.core.streams.topics import MAX_PARTITIONS, validate_topic_name
from wharf.core.streams.view import JobCounts, PartitionView
from wharf.errors import (
    AlreadyExistsError,
    InvalidArgumentError,
    NotFoundError,
    StorageError,
)

if TYPE_CHECKING:
    from wharf.cluster.catalog import NodeLease, TopicInfo
    from wharf.cluster.database import Database

__all__ = ["ClusterStreams", "ClusterTopic", "ClusterTopicManager"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


@dataclass(eq=False)
class ClusterTopic:
    name: str
    topic_id: uuid.UUID
    overrides: dict[str, str]
    config: TopicConfig
    partitions: list[ClusterPartition] = field(default_factory=list)

    @property
    def partition_count(self) -> int:
        return len(self.partitions)


@dataclass(frozen=True)
class ClusterStreams:
    """The node's stream writer, reader and watermarks, and how to stop them."""

    writer: StreamWriter
    reader: StreamReader
    watermarks: Watermarks
    close: Callable[[], Awaitable[None]]
    jobs: dict[str, JobCounts] = field(default_factory=dict)  # filled by ClusterMaintenance


class ClusterTopicManager:
    """Every topic of the cluster, for this node; open with :meth:`open`."""

    def __init__(
        self,
        db: Database,
        lease: Callable[[], NodeLease],
        config: BrokerConfig,
        clock: Clock,
        streams: ClusterStreams,
        *,
        refresh_interval: float = 2.0,
        live_nodes: Callable[[], int] = lambda: 1,
    ) -> None:
        self._db = db
        self._live_nodes = live_nodes  # replication factors up to this many are accepted
        self._lease = lease
        self._config = config
        self._clock = clock
        self._streams = streams
        self._refresh_interval = refresh_interval
        self._topics: dict[str, ClusterTopic] = {}
        self._by_id: dict[uuid.UUID, ClusterTopic] = {}
        self._changed = asyncio.Event()
        self._listener = CatalogListener(db, self._changed.set)
        self._refresher: asyncio.Task[None] | None = None
        self._reload_lock = asyncio.Lock()
        self._asked = 0  # reloads asked for
        self._served = 0  # reloads whose read began after the ask with this number

    @classmethod
    async def open(
        cls,
        db: Database,
        lease: Callable[[], NodeLease],
        config: BrokerConfig,
        clock: Clock,
        streams: ClusterStreams,
        *,
        refresh_interval: float = 2.0,
        live_nodes: Callable[[], int] = lambda: 1,
    ) -> ClusterTopicManager:
        """The manager with the catalogue loaded (``DatabaseError`` when it cannot be read)."""
        manager = cls(
            db, lease, config, clock, streams,
            refresh_interval=refresh_interval, live_nodes=live_nodes,
        )
        await manager.reload()
        return manager

    def start(self) -> None:
        self._listener.start()
        self._refresher = asyncio.create_task(self._refresh_loop(), name="wharf catalog refresh")

    async def close(self) -> None:
        refresher, self._refresher = self._refresher, None
        if refresher is not None:
            refresher.cancel()
            await asyncio.gather(refresher, return_exceptions=True)
        await self._listener.close()
        await self._streams.close()

    @property
    def listening(self) -> asyncio.Event:
        """Set while catalogue notifications are heard."""
        return self._listener.listening

    # ------------------------------------------------------------------ lookups

    def get(self, name: str) -> ClusterTopic:
        topic = self._topics.get(name)
        if topic is None:
            raise UnknownTopicError(f"no topic {name!r}")
        return topic

    def find(self, name: str) -> ClusterTopic | None:
        return self._topics.get(name)

    def by_id(self, topic_id: uuid.UUID) -> ClusterTopic | None:
        return self._by_id.get(topic_id)

    def list(self) -> builtins.list[ClusterTopic]:
        return sorted(self._topics.values(), key=lambda t: t.name)

    def partition(self, name: str, index: int) -> ClusterPartition:
        topic = self.get(name)
        if not 0 <= index < len(topic.partitions):
            raise UnknownTopicError(f"topic {name!r} has no partition {index}")
        return topic.partitions[index]

    def partition_exists(self, name: str, index: int) -> bool:
        topic = self._topics.get(name)
        return topic is not None and 0 <= index < len(topic.partitions)

    def partitions(self) -> Iterable[ClusterPartition]:
        for topic in self._topics.values():
            yield from topic.partitions

    def describe_configs(self, name: str) -> builtins.list[ConfigEntry]:
        return describe(self._config.topic_defaults, self.get(name).overrides)

    def engine_counters(self) -> Mapping[str, int]:
        """The writer's flushes and the reader's cache, for ``/metrics`` (see TopicsView)."""
        writer, reader = self._streams.writer, self._streams.reader
        return {
            "flushes": writer.flushes,
            "flushed_bytes": writer.flushed_bytes,
            "read_cache_hits": reader.cache_hits,
            "read_cache_misses": reader.cache_misses,
        }

    def job_counters(self) -> Mapping[str, JobCounts]:
        """The background jobs' counts on this node (see TopicsView)."""
        return self._streams.jobs

    async def recovered(self) -> None:
        """At once: a node's partitions are in the database and the object store."""

    async def reload(self) -> None:
        """Re-read the catalogue; returns once a read that began after this call is in."""
        self._asked += 1
        mine = self._asked
        async with self._reload_lock:
            if self._served >= mine:
                return
            begun = self._asked
            self._install(await catalog.list_topics(self._db))
            self._served = begun

    # ------------------------------------------------------------------ changes

    async def create(
        self,
        name: str,
        partitions: int | None = None,
        configs: Mapping[str, str | None] | None = None,
        *,
        replication_factor: int = -1,
        validate_only: bool = False,
    ) -> ClusterTopic:
        """Create a topic (``partitions`` and ``replication_factor`` -1 or None: defaults)."""
        count = self._config.topic_defaults.partitions if partitions in (None, -1) else partitions
        assert count is not None
        validate_topic_name(name)
        if not 1 <= count <= MAX_PARTITIONS:
            raise InvalidPartitionsError(
                f"partitions must be between 1 and {MAX_PARTITIONS}, not {count}"
            )
        live = max(1, self._live_nodes())
        if replication_factor != -1 and not 1 <= replication_factor <= live:
            # Durability is the object store's: any factor the live nodes could hold is served
            # as is (Metadata names the leader as the one replica), more is refused as in Kafka.
            raise StreamsError(
                f"replication factor {replication_factor} is larger than the {live} live "
                "nodes",
                ErrorCode.INVALID_REPLICATION_FACTOR,
            )
        overrides = parse_overrides(configs or {})
        config = TopicConfig.resolve(self._config.topic_defaults, overrides)
        if validate_only:
            if self.find(name) is not None:
                raise TopicExistsError(f"topic {name!r} already exists")
            return ClusterTopic(name, uuid.uuid4(), overrides, config)
        await self._write(
            lambda lease: catalog.create_topic(self._db, lease, name, count, overrides),
            InvalidTopicError,
        )
        await self.reload()
        return self.get(name)

    async def ensure(self, name: str) -> ClusterTopic:
        """The topic, created with defaults if missing and ``auto_create_topics`` is on."""
        topic = await self._fresh(name)
        if topic is not None:
            return topic
        if not self._config.auto_create_topics:
            raise UnknownTopicError(f"no topic {name!r} (auto-creation is off)")
        try:
            return await self.create(name)
        except TopicExistsError:  # another node created it meanwhile
            await self.reload()
            return self.get(name)

    async def delete(self, name: str) -> ClusterTopic:
        """Delete a topic (its data goes to the cluster's garbage collector)."""
        topic = await self._existing(name)
        await self._write(lambda lease: catalog.delete_topic(self._db, lease, name))
        await self.reload()
        return topic

    async def add_partitions(
        self, name: str, total: int, *, validate_only: bool = False
    ) -> ClusterTopic:
        """Grow ``name`` to ``total`` partitions (CreatePartitions: the new total count)."""
        topic = await self._existing(name)
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
        await self._write(
            lambda lease: catalog.create_partitions(self._db, lease, name, total),
            InvalidPartitionsError,
        )
        await self.reload()
        return self.get(name)

    async def alter_configs(
        self,
        name: str,
        set_configs: Mapping[str, str | None] | None = None,
        delete: Iterable[str] = (),
        *,
        replace: bool = False,
        validate_only: bool = False,
    ) -> ClusterTopic:
        """Change config overrides: ``replace`` = AlterConfigs (the given set becomes the whole
        set), otherwise IncrementalAlterConfigs (set these, delete those). Validated against
        the cached overrides; the catalogue applies the change to its own, under its row lock."""
        topic = await self._existing(name)
        removed = builtins.list(delete)
        given = parse_overrides(set_configs or {})
        overrides = {} if replace else dict(topic.overrides)
        for key in removed:
            overrides.pop(key, None)
        overrides.update(given)
        TopicConfig.resolve(self._config.topic_defaults, parse_overrides(overrides))
        if validate_only:
            return topic
        await self._write(
            lambda lease: catalog.alter_configs(
                self._db, lease, name, given, removed, replace=replace
            ),
            InvalidConfigError,
        )
        await self.reload()
        return self.get(name)

    def enforce_retention(self, now_ms: int) -> int:
        """Nothing here: retention in a cluster is a leased background job's."""
        return 0

    async def unload_idle(self) -> int:
        """Nothing here: a cluster node holds no partition files."""
        return 0

    async def delete_records(self, topic_id: uuid.UUID, partition: int, offset: int) -> int:
        """DeleteRecords on this node's lease; returns the partition's new log start."""
        return await retention.delete_records(
            self._db, self._lease(), topic_id, partition, offset
        )

    async def allocate_producer_id(self) -> int:
        """A producer id unique across the cluster (InitProducerId)."""
        return await self._write(lambda lease: catalog.allocate_producer_id(self._db, lease))

    async def wait_for_any(
        self, positions: Sequence[tuple[PartitionView, int]], timeout_s: float
    ) -> bool:
        """Wait on the watermarks for any partition to pass its offset (no query per wait)."""
        wanted = [
            (p, offset) for p, offset in positions if isinstance(p, ClusterPartition)
        ]
        if any(p.high_watermark > offset or p.deleted for p, offset in wanted):
            return True
        return await self._streams.watermarks.wait_for_any(
            [(p.topic_id, p.index, offset) for p, offset in wanted], timeout_s
        )

    # ------------------------------------------------------------------ internals

    async def _fresh(self, name: str) -> ClusterTopic | None:
        """The cached topic, or after one re-read of the catalogue, or None."""
        topic = self.find(name)
        if topic is None:
            await self.reload()
            topic = self.find(name)
        return topic

    async def _existing(self, name: str) -> ClusterTopic:
        topic = await self._fresh(name)
        if topic is None:
            raise UnknownTopicError(f"no topic {name!r}")
        return topic

    async def _write(
        self,
        change: Callable[[NodeLease], Awaitable[_T]],
        invalid: type[StreamsError] = InvalidTopicError,
    ) -> _T:
        """Run a catalogue change on this node's lease; its errors as streams errors
        (``invalid``: the class for a refused argument)."""
        try:
            return await change(self._lease())
        except LeaseLostError as exc:
            raise lease_lost(exc, ErrorCode.NOT_CONTROLLER) from exc
        except AlreadyExistsError as exc:
            raise TopicExistsError(str(exc)) from exc
        except NotFoundError as exc:
            raise UnknownTopicError(str(exc)) from exc
        except InvalidArgumentError as exc:
            raise invalid(str(exc)) from exc

    def _install(self, infos: builtins.list[TopicInfo]) -> None:
        """Make the cache the catalogue as read: partition objects of known topics are kept."""
        topics: dict[str, ClusterTopic] = {}
        by_id: dict[uuid.UUID, ClusterTopic] = {}
        for info in infos:
            topic = self._by_id.get(info.topic_id)
            config = self._resolve(info)
            if topic is None:
                topic = ClusterTopic(info.name, info.topic_id, dict(info.configs), config)
            elif topic.overrides != info.configs:
                topic.overrides, topic.config = dict(info.configs), config
                for partition in topic.partitions:
                    partition.update_config(config)
            for part in info.partitions[len(topic.partitions) :]:
                topic.partitions.append(self._partition(topic, part.partition))
            for part in info.partitions:
                partition = topic.partitions[part.partition]
                partition.learn(part.log_start_offset, part.next_offset)
                partition.size_bytes = part.bytes
            topics[topic.name] = topic
            by_id[topic.topic_id] = topic
        for topic_id, gone in self._by_id.items():
            if topic_id not in by_id:
                for partition in gone.partitions:
                    partition.deleted = True
        self._topics, self._by_id = topics, by_id

    def _resolve(self, info: TopicInfo) -> TopicConfig:
        try:
            return TopicConfig.resolve(self._config.topic_defaults, info.configs)
        except StreamsError as exc:  # stored by a Wharf that knew other configs
            log.warning("topic %s: configs %s ignored: %s", info.name, info.configs, exc)
            return TopicConfig.resolve(self._config.topic_defaults, {})

    def _partition(self, topic: ClusterTopic, index: int) -> ClusterPartition:
        return ClusterPartition(
            topic.name,
            topic.topic_id,
            index,
            topic.config,
            writer=self._streams.writer,
            reader=self._streams.reader,
            watermarks=self._streams.watermarks,
            clock=self._clock,
            delete_records=self.delete_records,
        )

    async def _refresh_loop(self) -> None:
        while True:
            try:
                async with asyncio.timeout(self._refresh_interval):
                    await self._changed.wait()
            except TimeoutError:
                pass
            self._changed.clear()
            try:
                await self.reload()
            except StorageError as exc:
                log.warning("catalogue refresh failed (retrying): %s", exc)
