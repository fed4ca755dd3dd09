"""The broker's latency histograms (:mod:`wharf.core.stats`) as Prometheus histogram families,
made at scrape time from their plain per-bucket counts."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import accumulate

from prometheus_client.core import HistogramMetricFamily

from wharf.core.stats import Histogram


def histogram_family(
    name: str,
    doc: str,
    labels: Sequence[str],
    members: Iterable[tuple[Sequence[str], Histogram]],
) -> HistogramMetricFamily:
    """One family with a histogram per ``(label values, histogram)`` of ``members``."""
    family = HistogramMetricFamily(name, doc, labels=list(labels))
    for values, histogram in members:
        family.add_metric(
            list(values), cumulative_buckets(histogram.bounds, histogram.counts), histogram.sum
        )
    return family


def cumulative_buckets(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    """Per-bucket counts (one per bound, then one above every bound) as the cumulative
    ``(le, count)`` pairs a Prometheus histogram family takes."""
    les = (*map(str, bounds), "+Inf")
    return [(le, float(total)) for le, total in zip(les, accumulate(counts), strict=True)]
