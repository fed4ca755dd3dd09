"""Latency histograms owned by one broker: fsyncs by log kind, requests by protocol operation,
HTTP API requests by route.

How it works: a :class:`Histogram` is plain per-bucket counts (not cumulative), their sum and
count; :meth:`Histogram.observe` is one bisect and three additions on the event-loop thread, with
no locks and nothing else on the hot path. A :class:`HistogramFamily` makes one histogram per key
the first time the key is used. ``broker.stats`` (a :class:`BrokerStats`) holds the broker's
families, so two brokers in one process never mix their figures; ``/metrics`` reads them when
scraped and turns the counts into cumulative Prometheus histograms.

* ``stats.fsync[kind]``: each group commit's flush (``partition``, ``offsets``, ``queue``,
  ``queue-state``); the committers are given the family and record into their kind's histogram.
* ``stats.requests[(protocol, operation)]``: a Kafka request by API name, an AMQP method by
  name, from decoded to answered; a listener records through :meth:`BrokerStats.request_timer`.
* ``stats.http[route]``: the HTTP API's own requests, by method and route template.
* ``stats.database[operation]`` and ``stats.object_store[operation]``: in cluster mode, each
  catalogue-database transaction by name and each object-store call by operation, recorded
  through the engines' ``observe`` hooks (the server may replace these two families with ones
  that already hold what it observed before the broker opened).
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Generic, TypeVar

__all__ = [
    "FSYNC_BUCKETS_S",
    "HTTP_BUCKETS_S",
    "REQUEST_BUCKETS_S",
    "CLUSTER_BUCKETS_S",
    "BrokerStats",
    "Histogram",
    "HistogramFamily",
    "RequestTimer",
]

# Upper bounds (seconds) of the buckets; one more bucket counts the rest.
FSYNC_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip
# Long polls (a Kafka Fetch waiting for data, up to the client's max wait) land in the upper
# buckets.
REQUEST_BUCKETS_S = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0, 30.0,
)  # fmt: skip
HTTP_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
# Database transactions and object-store calls: sub-millisecond on a LAN, seconds when failing.
CLUSTER_BUCKETS_S = (
    0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0,
)  # fmt: skip


class Histogram:
    """Durations: ``counts[i]`` took at most ``bounds[i]`` seconds and more than
    ``bounds[i-1]``; the last count is for longer ones. Also their ``sum`` and ``count``."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.sum += seconds
        self.count += 1


K = TypeVar("K", str, tuple[str, str])


class HistogramFamily(Generic[K]):
    """One :class:`Histogram` per key, all with the same bounds, made on first use."""

    __slots__ = ("_members", "bounds")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self._members: dict[K, Histogram] = {}

    def __getitem__(self, key: K) -> Histogram:
        histogram = self._members.get(key)
        if histogram is None:
            histogram = self._members[key] = Histogram(self.bounds)
        return histogram

    def __len__(self) -> int:
        return len(self._members)

    def items(self) -> list[tuple[K, Histogram]]:
        """Every histogram made so far, in key order."""
        return sorted(self._members.items())


class RequestTimer:
    """What a listener hands its connections: ``observe(operation, seconds)`` records into
    ``requests[(protocol, operation)]`` (one dict lookup once an operation has been seen)."""

    __slots__ = ("_by_operation", "_requests", "protocol")

    def __init__(self, requests: HistogramFamily[tuple[str, str]], protocol: str) -> None:
        self._requests = requests
        self.protocol = protocol
        self._by_operation: dict[str, Histogram] = {}

    def observe(self, operation: str, seconds: float) -> None:
        histogram = self._by_operation.get(operation)
        if histogram is None:
            histogram = self._by_operation[operation] = self._requests[(self.protocol, operation)]
        histogram.observe(seconds)


class BrokerStats:
    """The histograms of one broker (``broker.stats``); see the module docstring."""

    def __init__(self) -> None:
        self.fsync: HistogramFamily[str] = HistogramFamily(FSYNC_BUCKETS_S)
        self.requests: HistogramFamily[tuple[str, str]] = HistogramFamily(REQUEST_BUCKETS_S)
        self.http: HistogramFamily[str] = HistogramFamily(HTTP_BUCKETS_S)
        self.database: HistogramFamily[str] = HistogramFamily(CLUSTER_BUCKETS_S)
        self.object_store: HistogramFamily[str] = HistogramFamily(CLUSTER_BUCKETS_S)
        self._timers: dict[str, RequestTimer] = {}

    def request_timer(self, protocol: str) -> RequestTimer:
        """The timer of ``protocol``'s requests (the same one on every call)."""
        timer = self._timers.get(protocol)
        if timer is None:
            timer = self._timers[protocol] = RequestTimer(self.requests, protocol)
        return timer
