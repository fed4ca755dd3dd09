"""Request latency per protocol operation, kept as plain bucket counts.

How it works: a listener owns one :class:`RequestStats` and hands it to its connections, which
call :meth:`RequestStats.observe` once per request with the operation's name (Kafka's API name,
such as ``Produce``; an AMQP method name) and the seconds from the request's decoding to its
response being written. An observation is a dict lookup, one bisect and three additions on the
event-loop thread: no locks and no Prometheus calls on the request path. ``/metrics`` reads
:meth:`RequestStats.operations` when scraped and turns the per-bucket counts into a cumulative
histogram (``wharf_request_seconds``).
"""

from __future__ import annotations

from bisect import bisect_left

__all__ = ["REQUEST_BUCKETS_S", "OperationTimings", "RequestStats"]

# Upper bounds (seconds); one more bucket counts the rest. Long polls (a Kafka Fetch waiting
# for data, up to the client's max wait) land in the upper buckets.
REQUEST_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
)  # fmt: skip


class OperationTimings:
    """Durations of one operation: per-bucket counts (not cumulative), their sum and count."""

    __slots__ = ("protocol", "operation", "buckets", "counts", "sum", "count")

    def __init__(self, protocol: str, operation: str, buckets: tuple[float, ...]) -> None:
        self.protocol = protocol
        self.operation = operation
        self.buckets = buckets
        self.counts = [0] * (len(buckets) + 1)  # counts[i]: buckets[i-1] < d <= buckets[i]
        self.sum = 0.0
        self.count = 0


class RequestStats:
    """Latency histograms of one protocol's requests, one per operation name."""

    def __init__(self, protocol: str, buckets: tuple[float, ...] = REQUEST_BUCKETS_S) -> None:
        self.protocol = protocol
        self.buckets = buckets
        self._operations: dict[str, OperationTimings] = {}

    def observe(self, operation: str, seconds: float) -> None:
        """Count one request of ``operation`` that took ``seconds``."""
        timings = self._operations.get(operation)
        if timings is None:
            timings = OperationTimings(self.protocol, operation, self.buckets)
            self._operations[operation] = timings
        timings.counts[bisect_left(self.buckets, seconds)] += 1
        timings.sum += seconds
        timings.count += 1

    def operations(self) -> list[OperationTimings]:
        """Every operation observed so far, by name."""
        return [self._operations[name] for name in sorted(self._operations)]
