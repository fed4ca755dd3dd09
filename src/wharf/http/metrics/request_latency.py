"""The ``wharf_request_seconds`` histogram: Kafka and AMQP request latency per operation.

The listeners record into the broker's ``stats.requests`` (see :mod:`wharf.core.stats`); this
module turns them into one Prometheus histogram family at scrape time.
"""

from __future__ import annotations

from prometheus_client.core import HistogramMetricFamily

from wharf.core.stats import BrokerStats
from wharf.http.metrics.latency import histogram_family

NAME = "wharf_request_seconds"
HELP = (
    "Protocol request latency, from the request decoded to its response written, by protocol "
    "and operation (for Kafka, the API name; for AMQP, the method name). A Fetch long poll "
    "counts its wait for data (up to the client's fetch max wait), so Fetch latency is "
    "dominated by that wait; a response queued behind it on the same connection counts the "
    "wait too. AMQP times synchronous methods (Queue.Declare, Basic.Get, ...) to their reply, "
    "and Basic.Publish only on channels in confirm mode, to its Basic.Ack or Basic.Nack"
)


def request_latency_family(stats: BrokerStats) -> HistogramMetricFamily:
    """The histogram family of every operation the broker's listeners timed so far."""
    return histogram_family(NAME, HELP, ["protocol", "operation"], stats.requests.items())
