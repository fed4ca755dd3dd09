"""The fault tests' checker finds each kind of damage it is there to find (and none in a
healthy log), so that its silence in a fault test means something."""

from __future__ import annotations

from wharf.testing.cluster_checker import Ack, check

HEALTHY = {0: [(0, b"a"), (1, b"b"), (2, b"c")], 1: [(0, b"d")]}
ACKS = [Ack(0, 0, b"a"), Ack(0, 2, b"c"), Ack(1, 0, b"d")]


def test_a_healthy_log_passes() -> None:
    report = check(ACKS, HEALTHY, {p: list(r) for p, r in HEALTHY.items()})
    assert report.ok, str(report)
    assert (report.acknowledged, report.stored) == (3, 4)


def test_a_lost_or_moved_acknowledged_value_is_found() -> None:
    damaged = {0: [(0, b"a"), (1, b"b"), (2, b"x")], 1: []}
    report = check(ACKS, damaged, damaged)
    assert report.lost == [Ack(0, 2, b"c"), Ack(1, 0, b"d")]


def test_gaps_duplicates_and_disagreeing_readers_are_found() -> None:
    gapped = {0: [(0, b"a"), (2, b"c"), (3, b"a")], 1: [(0, b"d")]}
    other = {0: [(0, b"a"), (2, b"c"), (3, b"a")], 1: [(0, b"e")]}
    report = check([], gapped, other)
    assert report.gaps == ["partition 0: 0 then 2"]
    assert report.duplicates == [b"a"]
    assert report.disagreements == [1]
    assert not report.ok
