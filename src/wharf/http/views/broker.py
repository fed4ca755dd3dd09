"""Read-only queries over the broker core that several API modules, the metrics collector and
the rate sampler share (topics, partitions, groups' lag, queues, bindings, exchanges, storage)."""

from __future__ import annotations

from dataclasses import dataclass

from wharf.core.broker import Broker
from wharf.core.queues.exchanges import DestKind, Exchange
from wharf.core.queues.queue import Queue
from wharf.core.queues.vhost import VirtualHost
from wharf.core.streams.view import PartitionView, TopicView
from wharf.errors import NotFoundError
from wharf.http.schemas import BindingInfo, OffsetLag


@dataclass(frozen=True, slots=True)
class PartitionStats:
    partition: int
    start_offset: int
    end_offset: int  # log end: every appended record took one offset
    high_watermark: int  # what consumers may read
    size_bytes: int
    bytes_in: int
    bytes_out: int


@dataclass(frozen=True, slots=True)
class TopicStats:
    name: str
    topic_id: str
    configs: dict[str, str]
    partitions: list[PartitionStats]


def topic_stats(broker: Broker) -> list[TopicStats]:
    return [_topic_stats(broker, topic) for topic in broker.topics.list()]


def one_topic_stats(broker: Broker, name: str) -> TopicStats:
    """The stats of topic ``name`` (404 when absent)."""
    return _topic_stats(broker, broker.topics.get(name))


def _topic_stats(broker: Broker, topic: TopicView) -> TopicStats:
    return TopicStats(
        name=topic.name,
        topic_id=str(topic.topic_id),
        configs={
            entry.name: entry.value
            for entry in broker.topics.describe_configs(topic.name)
            if entry.value is not None
        },
        partitions=[_partition_stats(p) for p in topic.partitions],
    )


def _partition_stats(p: PartitionView) -> PartitionStats:
    return PartitionStats(
        partition=p.index,
        start_offset=p.log_start_offset,
        end_offset=p.log_end_offset,
        high_watermark=p.high_watermark,
        size_bytes=p.size_bytes,
        bytes_in=p.bytes_in,
        bytes_out=p.bytes_out,
    )


def partition(broker: Broker, topic: str, index: int) -> PartitionView:
    return broker.topics.partition(topic, index)


def partition_count(broker: Broker, topic: str) -> int:
    return len(broker.topics.get(topic).partitions)


def high_watermark(broker: Broker, topic: str, index: int) -> int | None:
    """The partition's high watermark, or None when it does not exist."""
    if not broker.topics.partition_exists(topic, index):
        return None
    return broker.topics.partition(topic, index).high_watermark


def offset_bounds(broker: Broker, topic: str, index: int) -> tuple[int, int]:
    """``(log start offset, high watermark)``."""
    p = broker.topics.partition(topic, index)
    return p.log_start_offset, p.high_watermark


async def offset_for_timestamp(
    broker: Broker, topic: str, index: int, timestamp_ms: int
) -> int | None:
    """First offset whose record timestamp is >= ``timestamp_ms``; None when there is none."""
    offset, _ = await broker.topics.partition(topic, index).find_offset(timestamp_ms)
    return None if offset < 0 else offset


def group_offsets(broker: Broker, group: str) -> list[OffsetLag]:
    """Committed offsets of ``group`` with the lag behind each partition's high watermark
    (offsets of deleted topics are left out)."""
    rows: list[OffsetLag] = []
    for tp, entry in sorted(broker.groups.fetch_offsets(group).items()):
        end = high_watermark(broker, tp.topic, tp.partition)
        if end is None:
            continue
        rows.append(
            OffsetLag(
                topic=tp.topic,
                partition=tp.partition,
                committed=entry.offset,
                high_watermark=end,
                lag=max(end - entry.offset, 0),
            )
        )
    return rows


def all_group_offsets(broker: Broker) -> list[tuple[str, OffsetLag]]:
    return [
        (listing.group_id, row)
        for listing in broker.groups.list_groups()
        for row in group_offsets(broker, listing.group_id)
    ]


def vhost(broker: Broker, name: str) -> VirtualHost:
    return broker.vhosts[name]


def vhosts(broker: Broker, name: str | None = None) -> list[VirtualHost]:
    """Every vhost, or just ``name`` (404 when it does not exist)."""
    return [broker.vhosts[name]] if name is not None else list(broker.vhosts)


def queues(broker: Broker, vhost_name: str | None = None) -> list[Queue]:
    return [
        queue for host in vhosts(broker, vhost_name) for _, queue in sorted(host.queues.items())
    ]


def queue(broker: Broker, vhost_name: str, name: str) -> Queue:
    found = broker.vhosts[vhost_name].queues.get(name)
    if found is None:
        raise NotFoundError(f"no queue {name!r} in vhost {vhost_name!r}")
    return found


def bindings(host: VirtualHost, *, queue: str | None = None) -> list[BindingInfo]:
    """The explicit bindings of ``host``, or only those whose destination is ``queue``."""
    found: list[BindingInfo] = []
    for binding in host.bindings():
        to_queue = binding.kind is DestKind.QUEUE
        if queue is not None and not (to_queue and binding.destination == queue):
            continue
        found.append(
            BindingInfo(
                vhost=host.name,
                source=binding.source,
                destination=binding.destination,
                destination_type="queue" if to_queue else "exchange",
                routing_key=binding.routing_key,
                arguments=dict(binding.arguments),
            )
        )
    return found


def exchanges(broker: Broker, vhost_name: str | None = None) -> list[tuple[str, Exchange]]:
    return [
        (host.name, exchange)
        for host in vhosts(broker, vhost_name)
        for _, exchange in sorted(host.exchanges.items())
    ]


def storage_bytes(broker: Broker) -> int:
    """Bytes of every partition log and queue message log."""
    total = sum(p.size_bytes for p in broker.topics.partitions())
    for q in queues(broker):
        total += q.store.size_bytes
    return total


def fsync_count(broker: Broker) -> int:
    """Completed group-commit fsyncs of every partition."""
    return sum(p.fsyncs for p in broker.topics.partitions())
