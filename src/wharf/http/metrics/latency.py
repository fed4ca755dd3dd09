"""A latency histogram kept as plain bucket counts, exported to Prometheus on demand."""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from itertools import accumulate

from prometheus_client.core import HistogramMetricFamily

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class LatencyHistogram:
    """Cumulative-at-export bucket counts of durations, per label value."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS_S) -> None:
        self.buckets = buckets
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def observe(self, label: str, seconds: float) -> None:
        counts = self._counts.get(label)
        if counts is None:
            counts = self._counts[label] = [0] * (len(self.buckets) + 1)
            self._sums[label] = 0.0
        counts[bisect.bisect_left(self.buckets, seconds)] += 1
        self._sums[label] += seconds

    def families(self, name: str, doc: str, label_name: str) -> HistogramMetricFamily:
        family = HistogramMetricFamily(name, doc, labels=[label_name])
        for label, counts in sorted(self._counts.items()):
            family.add_metric([label], cumulative_buckets(self.buckets, counts), self._sums[label])
        return family


def cumulative_buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (one per bound, then one above every bound) as the cumulative
    ``(le, count)`` pairs a Prometheus histogram family takes."""
    les = (*map(str, bounds), "+Inf")
    return [(le, float(total)) for le, total in zip(les, accumulate(counts), strict=True)]
