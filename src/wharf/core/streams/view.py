"""What the front ends need from a broker's topics and partitions, whatever holds them.

A single-node broker keeps its streams on local disk (:class:`~wharf.core.streams.topics
.TopicManager` with :class:`~wharf.core.streams.partition.Partition`); a node of a cluster keeps
them in the cluster's engines (:mod:`wharf.core.streams.cluster_topics`). The Kafka handlers,
the HTTP API and the embedded API see either through these protocols, so they never ask which.

Lookups (:meth:`TopicsView.get`, ``find``, ``partition``...) are synchronous: both managers
answer from memory. In a cluster that memory is a cache of the catalogue, so a request that
misses calls :meth:`TopicsView.reload` once (a no-op on a single node) and looks again before
answering UNKNOWN_TOPIC_OR_PARTITION: a topic created on another node is usable at once.
Reads are asynchronous (one await per partition read); counters and positions are properties.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from wharf.core.streams.partition import AppendResult
    from wharf.core.streams.topic_config import ConfigEntry, TopicConfig
    from wharf.storage.record_batch import Record, RecordInput

__all__ = ["JobCounts", "PartitionView", "TopicView", "TopicsView"]


@dataclass(slots=True)
class JobCounts:
    """What one background job of a cluster node did on that node, for ``/metrics``."""

    runs: int = 0  # rounds done (the node held the job's lease)
    items: int = 0  # what the rounds did: objects compacted, index rows removed, objects deleted
    failures: int = 0  # rounds that failed and wait for the next interval


class PartitionView(Protocol):
    """One partition of a topic."""

    @property
    def topic(self) -> str: ...
    @property
    def index(self) -> int: ...
    @property
    def high_watermark(self) -> int:
        """The end of what consumers may read."""
    @property
    def log_start_offset(self) -> int: ...
    @property
    def log_end_offset(self) -> int:
        """The next offset an append takes (at or past the high watermark)."""
    @property
    def size_bytes(self) -> int: ...
    @property
    def messages_in(self) -> int: ...
    @property
    def bytes_in(self) -> int: ...
    @property
    def bytes_out(self) -> int: ...
    @property
    def fsyncs(self) -> int:
        """Completed group-commit fsyncs of this partition (0 where nothing is fsynced)."""

    async def append(self, batches: bytes, *, acks: int = -1) -> AppendResult:
        """Append a producer's record batches, as sent; see ``Partition.append``."""

    async def append_records(
        self, records: Sequence[RecordInput], *, acks: int = -1, now_ms: int | None = None
    ) -> AppendResult:
        """Encode ``records`` into one batch and append it (the embedded API's path)."""

    async def fetch(self, offset: int, max_bytes: int) -> bytes:
        """Whole stored batches from the one holding ``offset``, none at or past the high
        watermark, at least one when there is one; ``OffsetOutOfRangeError`` outside the log."""

    async def fetch_records(
        self, offset: int, max_records: int, max_bytes: int = 1 << 20
    ) -> builtins.list[Record]:
        """Decoded records from ``offset`` on (control batches skipped)."""

    async def find_offset(self, timestamp_ms: int) -> tuple[int, int]:
        """ListOffsets: ``(offset, timestamp)`` for -1 (latest), -2 (earliest), -3 (max
        timestamp) or a timestamp; ``(-1, -1)`` when there is none."""

    async def delete_records(self, offset: int) -> int:
        """DeleteRecords below ``offset`` (-1: the high watermark); the new log start."""

    async def wait_for_data(self, offset: int, timeout_s: float | None = None) -> bool:
        """Wait until the high watermark passes ``offset`` (True) or the time runs out."""


class TopicView(Protocol):
    """A topic: its name, id, configuration and partitions."""

    @property
    def name(self) -> str: ...
    @property
    def topic_id(self) -> uuid.UUID: ...
    @property
    def overrides(self) -> Mapping[str, str]: ...
    @property
    def config(self) -> TopicConfig: ...
    @property
    def partitions(self) -> Sequence[PartitionView]: ...


class TopicsView(Protocol):
    """Every topic of the broker (``broker.topics``)."""

    def start(self) -> None: ...
    async def close(self) -> None: ...

    # lookups, from memory
    def get(self, name: str) -> TopicView:
        """The topic; ``UnknownTopicError`` without one."""
    def find(self, name: str) -> TopicView | None: ...
    def by_id(self, topic_id: uuid.UUID) -> TopicView | None: ...
    def list(self) -> Sequence[TopicView]:
        """Every topic, by name."""
    def partition(self, name: str, index: int) -> PartitionView:
        """The partition; ``UnknownTopicError`` without one."""
    def partition_exists(self, name: str, index: int) -> bool: ...
    def partitions(self) -> Iterable[PartitionView]: ...
    def describe_configs(self, name: str) -> builtins.list[ConfigEntry]: ...

    async def reload(self) -> None:
        """Bring the lookups up to date with the catalogue (after a miss)."""

    async def recovered(self) -> None:
        """Return once every partition's positions are known without opening a log on the
        caller's thread: on one node, once the logs a crash left are recovered."""

    def engine_counters(self) -> Mapping[str, int]:
        """Cluster mode: counters of the node's stream engine for ``/metrics`` (``flushes``,
        ``flushed_bytes``, ``read_cache_hits``, ``read_cache_misses``); empty on one node."""

    def job_counters(self) -> Mapping[str, JobCounts]:
        """Cluster mode: the background jobs' counts on this node, by job; empty on one node."""

    # changes
    async def create(
        self,
        name: str,
        partitions: int | None = None,
        configs: Mapping[str, str | None] | None = None,
        *,
        replication_factor: int = -1,
        validate_only: bool = False,
    ) -> TopicView: ...
    async def ensure(self, name: str) -> TopicView:
        """The topic, created with defaults if missing and auto-creation is on."""
    async def delete(self, name: str) -> TopicView: ...
    async def add_partitions(
        self, name: str, total: int, *, validate_only: bool = False
    ) -> TopicView: ...
    async def alter_configs(
        self,
        name: str,
        set_configs: Mapping[str, str | None] | None = None,
        delete: Iterable[str] = (),
        *,
        replace: bool = False,
        validate_only: bool = False,
    ) -> TopicView: ...

    def enforce_retention(self, now_ms: int) -> int:
        """Apply retention where this node does; returns the segments deleted."""

    async def unload_idle(self) -> int:
        """Close the files of partitions idle since the last call; returns how many."""

    async def wait_for_any(
        self, positions: Sequence[tuple[PartitionView, int]], timeout_s: float
    ) -> bool:
        """Wait until some partition's high watermark passes its offset (True), or
        ``timeout_s`` runs out (False): a long-polling fetch over several partitions."""
