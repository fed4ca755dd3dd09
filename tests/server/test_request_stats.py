"""RequestStats: per-operation bucket counts, sum and count."""

from __future__ import annotations

from wharf.server.request_stats import RequestStats


def test_observations_land_in_their_buckets_per_operation() -> None:
    stats = RequestStats("kafka", buckets=(0.001, 0.01, 0.1))
    stats.observe("Produce", 0.0005)
    stats.observe("Produce", 0.001)  # on a bound: counted in that bucket (le)
    stats.observe("Produce", 0.05)
    stats.observe("Fetch", 7.0)  # past the last bound
    fetch, produce = stats.operations()  # sorted by name
    assert (produce.protocol, produce.operation) == ("kafka", "Produce")
    assert produce.buckets == (0.001, 0.01, 0.1)
    assert produce.counts == [2, 0, 1, 0]
    assert produce.count == 3
    assert abs(produce.sum - 0.0515) < 1e-12
    assert fetch.operation == "Fetch"
    assert fetch.counts == [0, 0, 0, 1]
    assert (fetch.count, fetch.sum) == (1, 7.0)


def test_nothing_observed_lists_nothing() -> None:
    assert RequestStats("amqp").operations() == []
