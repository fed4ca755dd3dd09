"""The ``wharf_request_seconds`` histogram: Kafka and AMQP request latency per operation.

The listeners keep plain per-bucket counts (see :class:`~wharf.http.status.OperationLatencyView`);
this module turns them into one Prometheus histogram family at scrape time.
"""

from __future__ import annotations

from prometheus_client.core import HistogramMetricFamily

from wharf.http.metrics.latency import cumulative_buckets
from wharf.http.status import ServerView

NAME = "wharf_request_seconds"
HELP = (
    "Protocol request latency, from the request decoded to its response written, by protocol "
    "and operation (for Kafka, the API name; for AMQP, the method name). A Fetch long poll "
    "counts its wait for data (up to the client's fetch max wait), so Fetch latency is "
    "dominated by that wait; a response queued behind it on the same connection counts the "
    "wait too. AMQP times synchronous methods (Queue.Declare, Basic.Get, ...) to their reply, "
    "and Basic.Publish only on channels in confirm mode, to its Basic.Ack or Basic.Nack"
)


def request_latency_family(server: ServerView | None) -> HistogramMetricFamily:
    """The histogram family of every operation the server's listeners timed so far."""
    family = HistogramMetricFamily(NAME, HELP, labels=["protocol", "operation"])
    for timings in server.request_latencies() if server is not None else ():
        cumulative = cumulative_buckets(timings.buckets, timings.counts)
        family.add_metric([timings.protocol, timings.operation], cumulative, timings.sum)
    return family
