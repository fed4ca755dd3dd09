"""A latency histogram kept as plain bucket counts, exported to Prometheus on demand."""

from __future__ import annotations

import bisect

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
            cumulative, running = [], 0
            for bound, count in zip((*map(str, self.buckets), "+Inf"), counts, strict=True):
                running += count
                cumulative.append((bound, float(running)))
            family.add_metric([label], cumulative, self._sums[label])
        return family
