"""Broker settings that the core and storage layers act on.

The server layer loads these from TOML, ``WHARF_*`` environment variables and flags; the embedded
API takes a :class:`BrokerConfig` directly. Defaults follow what Kafka and RabbitMQ users expect.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass, field
from enum import StrEnum


class FsyncPolicy(StrEnum):
    """When appended data is forced to disk."""

    ALWAYS = "always"  # acknowledge only after fdatasync (group-committed)
    INTERVAL = "interval"  # fdatasync every ``fsync_interval_ms``; acknowledge at once
    NEVER = "never"  # leave it to the operating system


@dataclass(slots=True)
class TopicDefaults:
    """Defaults for new topics; each may be overridden per topic (Kafka config names)."""

    partitions: int = 1
    retention_ms: int | None = 7 * 24 * 3600 * 1000  # retention.ms; None = keep forever
    retention_bytes: int | None = None  # retention.bytes per partition; None = unlimited
    segment_bytes: int = 1 << 30  # segment.bytes
    segment_ms: int = 7 * 24 * 3600 * 1000  # segment.ms
    max_message_bytes: int = 1_048_588  # max.message.bytes (largest batch accepted)
    cleanup_policy: str = "delete"  # cleanup.policy


@dataclass(slots=True)
class ClusterJobSettings:
    """The background jobs of a cluster's streams (compaction, retention, garbage collection,
    the orphan sweep: docs/cluster.md) and where AMQP bodies go (the collector of the large
    ones runs every ``interval_ms`` too); all durations in milliseconds. Retention runs every
    ``BrokerConfig.retention_check_interval_ms``, the other jobs every ``interval_ms``."""

    interval_ms: int = 10_000
    compact_after_ms: int = 60_000  # intake batches at least this old are compacted
    compact_min_batches: int = 8  # ...once a partition has this many of them
    # the compactor's object-store traffic (GETs and PUTs) per node, on average; 0: unpaced
    compact_max_bytes_per_second: int = 32 << 20
    gc_grace_ms: int = 600_000  # an unreferenced object is deleted this long after
    orphan_grace_ms: int = 3_600_000  # an object no row names is deleted once this old
    job_timeout_ms: int = 120_000  # bound on one run of one job
    # AMQP bodies larger than this are kept in the object store, not in their rows
    amqp_body_threshold_bytes: int = 256 << 10


@dataclass(slots=True)
class BrokerConfig:
    """Everything the broker core needs to know; all durations in milliseconds."""

    fsync: FsyncPolicy = FsyncPolicy.ALWAYS
    fsync_interval_ms: int = 1000
    node_id: int = 0
    auto_create_topics: bool = True
    topic_defaults: TopicDefaults = field(default_factory=TopicDefaults)
    group_initial_rebalance_delay_ms: int = 3000
    group_min_session_timeout_ms: int = 6000
    group_max_session_timeout_ms: int = 1_800_000
    offsets_retention_ms: int = 7 * 24 * 3600 * 1000
    queue_segment_bytes: int = 64 << 20
    # Body bytes of ready messages a durable queue keeps in memory; beyond it, bodies are read
    # back from the queue's log when delivered.
    queue_resident_bytes: int = 8 << 20
    retention_check_interval_ms: int = 300_000
    # Partition logs held open at once (least recently used ones are closed beyond it); None:
    # a quarter of the process's open-file limit.
    open_partition_logs: int | None = None
    # Durable queues whose logs are held open at once (idle ones are closed beyond it); None:
    # half as many as the default for partition logs (a queue has two logs).
    open_queue_logs: int | None = None
    memory_high_watermark_bytes: int | None = None  # publishers blocked above this RSS
    disk_free_limit_bytes: int = 50 << 20  # publishers blocked below this much free disk
    cluster_jobs: ClusterJobSettings = field(default_factory=ClusterJobSettings)

def default_open_logs() -> int:
    """A quarter of the process's open-file limit (at least 64): what the partition logs may
    hold open at once by default."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 1 << 20
    return max(64, soft // 4)
