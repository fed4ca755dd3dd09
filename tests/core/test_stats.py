"""The broker's latency histograms: bucket counts, families made on first use, request timers,
and one broker's figures never mixed with another's."""

from __future__ import annotations

from pathlib import Path

from wharf.core.broker import Broker
from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.stats import (
    FSYNC_BUCKETS_S,
    REQUEST_BUCKETS_S,
    BrokerStats,
    Histogram,
    HistogramFamily,
)


def test_observations_land_in_their_buckets() -> None:
    histogram = Histogram((0.001, 0.01, 0.1))
    histogram.observe(0.0005)
    histogram.observe(0.001)  # on a bound: counted in that bucket (le)
    histogram.observe(0.05)
    histogram.observe(7.0)  # past the last bound
    assert histogram.bounds == (0.001, 0.01, 0.1)
    assert histogram.counts == [2, 0, 1, 1]
    assert histogram.count == 4
    assert abs(histogram.sum - 7.0515) < 1e-12


def test_a_family_makes_one_histogram_per_key_on_first_use() -> None:
    family = HistogramFamily[str]((0.5,))
    assert family.items() == [] and len(family) == 0
    family["b"].observe(1.0)
    family["a"].observe(0.1)
    family["b"].observe(0.2)
    assert [key for key, _ in family.items()] == ["a", "b"]  # in key order
    assert family["b"] is family["b"] and family["b"].bounds == (0.5,)
    assert family["b"].counts == [1, 1] and family["a"].counts == [1, 0]


def test_request_timers_record_by_protocol_and_operation() -> None:
    stats = BrokerStats()
    kafka = stats.request_timer("kafka")
    assert stats.request_timer("kafka") is kafka
    kafka.observe("Produce", 0.002)
    kafka.observe("Produce", 0.003)
    stats.request_timer("amqp").observe("Basic.Get", 0.001)
    timings = dict(stats.requests.items())
    assert set(timings) == {("amqp", "Basic.Get"), ("kafka", "Produce")}
    produce = timings[("kafka", "Produce")]
    assert produce.count == 2 and produce.bounds == REQUEST_BUCKETS_S
    assert stats.fsync.bounds == FSYNC_BUCKETS_S and len(stats.fsync) == 0


async def test_two_brokers_in_one_process_keep_separate_fsync_histograms(
    tmp_path: Path,
) -> None:
    config = BrokerConfig(fsync=FsyncPolicy.ALWAYS)
    async with Broker.open(tmp_path / "a", config) as a, Broker.open(tmp_path / "b", config) as b:
        assert a.stats is not b.stats
        await a.produce("t", b"x")
        await a.declare_queue("q")
        await a.publish("q", b"m")
        flushed = dict(a.stats.fsync.items())
        assert flushed["partition"].count >= 1 and flushed["queue"].count >= 1
        assert all(histogram.count == 0 for _, histogram in b.stats.fsync.items())
        await b.produce("t", b"y")
        assert b.stats.fsync["partition"].count >= 1
        assert b.stats.fsync["partition"] is not a.stats.fsync["partition"]
