"""The broker's metrics for Prometheus, read from its own counters at scrape time.

Imported by the first scrape of ``/metrics`` (:mod:`wharf.http.metrics.endpoint`), so that a
broker nobody scrapes never loads prometheus-client.

How it works: :class:`BrokerCollector` is a prometheus-client custom collector. Nothing on the
publish/deliver paths calls prometheus: on each scrape the collector walks topics, partitions,
queues, groups and listeners and reports the plain counters and gauges core objects already
keep. The latency histograms are the broker's own (``broker.stats``, :mod:`wharf.core.stats`):
the fsync latency (``wharf_fsync_seconds``, by log kind) recorded by the group committers, the
Kafka/AMQP request latency (``wharf_request_seconds``,
:mod:`wharf.http.metrics.request_latency`) recorded by the listeners, and the HTTP API's own
request latency (``wharf_http_request_duration_seconds``, by route) recorded by a middleware
here; in cluster mode also the catalogue database's transactions
(``wharf_database_seconds``, by transaction name) and the object store's calls
(``wharf_object_store_seconds``, by operation), recorded through the engines' observe hooks
(empty families in single-node mode), and the stream engine's counters:
``wharf_cluster_flushes_total``, ``wharf_cluster_flushed_bytes_total`` (their ratio is the mean
flush size), ``wharf_cluster_read_cache_hits_total`` and ``..._misses_total``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from importlib.metadata import version
from operator import attrgetter

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from wharf.core.stats import BrokerStats
from wharf.http.context import ApiContext
from wharf.http.metrics.latency import histogram_family
from wharf.http.metrics.request_latency import request_latency_family
from wharf.http.views import broker as view

# One family per queue counter: (family type, metric name, help, Queue attribute).
_QUEUE_FAMILIES: tuple[tuple[type[GaugeMetricFamily | CounterMetricFamily], str, str, str], ...] = (
    (
        GaugeMetricFamily,
        "wharf_queue_messages_ready",
        "Messages ready for delivery",
        "message_count",
    ),
    (
        GaugeMetricFamily,
        "wharf_queue_messages_unacked",
        "Delivered, not yet acknowledged",
        "unacked_count",
    ),
    (GaugeMetricFamily, "wharf_queue_consumers", "Consumers attached", "consumer_count"),
    (
        GaugeMetricFamily,
        "wharf_queue_message_bytes",
        "Body bytes of live messages",
        "message_bytes",
    ),
    (CounterMetricFamily, "wharf_queue_messages_published", "Messages enqueued", "published"),
    (CounterMetricFamily, "wharf_queue_messages_delivered", "Messages delivered", "delivered"),
    (CounterMetricFamily, "wharf_queue_messages_acked", "Messages acknowledged", "acked"),
    (
        CounterMetricFamily,
        "wharf_queue_messages_dead_lettered",
        "Messages dead-lettered",
        "dead_lettered",
    ),
)


# The queue gauges a queue that a crash left unread does not know yet (reading them would
# read the queue's logs back on the scrape's thread).
_READ_BACK = frozenset({"message_count", "message_bytes"})

# Cluster mode: the stream engine's counters (TopicsView.engine_counters), with their help.
_ENGINE_COUNTERS = {
    "flushes": "Cluster mode: intake flushes committed, one object each",
    "flushed_bytes": "Cluster mode: bytes of the committed intake objects (over flushes: the"
    " mean flush size)",
    "read_cache_hits": "Cluster mode: fetch reads served from the node's object cache",
    "read_cache_misses": "Cluster mode: object chunks fetched from the object store",
}

# Cluster mode: the background jobs' counts (TopicsView.job_counters), by field of JobCounts.
_JOB_COUNTERS = {
    "runs": "Cluster mode: rounds of a background job this node ran (it held the job's lease)",
    "items": "Cluster mode: what those rounds did: objects compacted (compactor), index rows"
    " removed (retention), objects deleted (gc, orphans)",
    "failures": "Cluster mode: rounds of a background job that failed on this node (retried"
    " at its next interval)",
}


class BrokerCollector(Collector):
    """Every wharf_* metric, computed from the broker when scraped."""

    def __init__(self, context: ApiContext) -> None:
        self._context = context

    def collect(self) -> Iterator[Metric]:  # noqa: C901 - one flat list of families
        context = self._context
        broker = context.broker
        info = InfoMetricFamily("wharf_build", "Wharf version")
        info.add_metric([], {"version": version("wharf")})
        yield info
        uptime = GaugeMetricFamily("wharf_uptime_seconds", "Seconds since the API started")
        uptime.add_metric([], time.monotonic() - context.started_monotonic)
        yield uptime

        labels = ["topic", "partition"]
        end = CounterMetricFamily(
            "wharf_partition_messages_in", "Records appended (the log end offset)", labels=labels
        )
        bytes_out = CounterMetricFamily(
            "wharf_partition_bytes_out", "Record batch bytes read by consumers", labels=labels
        )
        bytes_in = CounterMetricFamily(
            "wharf_partition_bytes_in", "Record batch bytes appended", labels=labels
        )
        start = GaugeMetricFamily(
            "wharf_partition_log_start_offset", "First offset still stored", labels=labels
        )
        stored = GaugeMetricFamily(
            "wharf_partition_messages", "Records stored (end minus start offset)", labels=labels
        )
        size = GaugeMetricFamily("wharf_partition_size_bytes", "Bytes on disk", labels=labels)
        for topic in view.topic_stats(broker):
            for p in topic.partitions:
                key = [topic.name, str(p.partition)]
                end.add_metric(key, p.end_offset)
                bytes_out.add_metric(key, p.bytes_out)
                bytes_in.add_metric(key, p.bytes_in)
                start.add_metric(key, p.start_offset)
                stored.add_metric(key, p.end_offset - p.start_offset)
                size.add_metric(key, p.size_bytes)
        yield from (end, bytes_in, bytes_out, start, stored, size)

        lag = GaugeMetricFamily(
            "wharf_consumer_group_lag",
            "High watermark minus committed offset",
            labels=["group", "topic", "partition"],
        )
        for group, row in view.all_group_offsets(broker):
            lag.add_metric([group, row.topic, str(row.partition)], row.lag)
        members = GaugeMetricFamily(
            "wharf_consumer_group_members", "Active members", labels=["group"]
        )
        for listing in broker.groups.list_groups():
            described = broker.groups.describe_group(listing.group_id)
            members.add_metric([listing.group_id], len(described.members))
        yield from (lag, members)

        families = [
            (kind(name, doc, labels=["vhost", "queue"]), attrgetter(attribute), attribute)
            for kind, name, doc, attribute in _QUEUE_FAMILIES
        ]
        for queue in view.queues(broker):
            key = [queue.vhost, queue.name]
            for family, value, attribute in families:
                if queue.recovering and attribute in _READ_BACK:
                    continue  # not known before the logs are read back: no sample
                family.add_metric(key, value(queue))
        yield from (family for family, _, _ in families)

        connections = GaugeMetricFamily(
            "wharf_connections", "Open client connections", labels=["protocol"]
        )
        if context.server is not None:
            per_protocol: dict[str, int] = {}
            for conn in context.server.connections():
                per_protocol[conn.protocol] = per_protocol.get(conn.protocol, 0) + 1
            for protocol, count in sorted(per_protocol.items()):
                connections.add_metric([protocol], count)
        yield connections
        yield request_latency_family(broker.stats)

        storage = GaugeMetricFamily("wharf_storage_bytes", "Bytes of every log on disk")
        storage.add_metric([], view.storage_bytes(broker))
        yield storage
        fsyncs = CounterMetricFamily("wharf_fsyncs", "Completed group-commit fsyncs")
        fsyncs.add_metric([], view.fsync_count(broker))
        yield fsyncs
        yield _fsync_latency(broker.stats)
        yield histogram_family(
            "wharf_http_request_duration_seconds",
            "HTTP API request latency by route",
            ["route"],
            (((route,), histogram) for route, histogram in broker.stats.http.items()),
        )
        yield histogram_family(
            "wharf_database_seconds",
            "Cluster mode: catalogue-database transactions, from waiting for a connection to the"
            " commit, by transaction name (connect: opening the pool)",
            ["operation"],
            (((name,), histogram) for name, histogram in broker.stats.database.items()),
        )
        for name, count in broker.topics.engine_counters().items():
            counter = CounterMetricFamily(f"wharf_cluster_{name}", _ENGINE_COUNTERS[name])
            counter.add_metric([], count)
            yield counter
        jobs = broker.topics.job_counters()
        for field, help_text in _JOB_COUNTERS.items():
            counter = CounterMetricFamily(
                f"wharf_cluster_job_{field}", help_text, labels=["job"]
            )
            for job, counts in jobs.items():
                counter.add_metric([job], getattr(counts, field))
            yield counter
        yield histogram_family(
            "wharf_object_store_seconds",
            "Cluster mode: object-store calls, retries included, by operation",
            ["operation"],
            (((name,), histogram) for name, histogram in broker.stats.object_store.items()),
        )


def _fsync_latency(stats: BrokerStats) -> HistogramMetricFamily:
    return histogram_family(
        "wharf_fsync_seconds",
        "Duration of group-commit flushes (fdatasync of a log), by log kind",
        ["kind"],
        (((kind,), histogram) for kind, histogram in stats.fsync.items()),
    )


def exposition(context: ApiContext) -> bytes:
    """The broker's metrics in Prometheus's text format, read now."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(BrokerCollector(context))
    return generate_latest(registry)

