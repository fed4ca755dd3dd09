"""Partition leadership in cluster mode: rendezvous hashing over the live broker ids."""

from __future__ import annotations

from collections import Counter

from wharf.protocol.kafka.handlers.metadata import leader_of

PARTITIONS = 300


def leaders(broker_ids: list[int], topic: str = "orders") -> list[int]:
    return [leader_of(topic, p, broker_ids) for p in range(PARTITIONS)]


def test_every_node_computes_the_same_leaders_whatever_the_order() -> None:
    assert leaders([1, 2, 3]) == leaders([3, 1, 2])


def test_partitions_spread_over_every_broker() -> None:
    counts = Counter(leaders([1, 2, 3]))
    assert set(counts) == {1, 2, 3}
    assert min(counts.values()) >= PARTITIONS // 3 // 2  # no broker gets less than half its share


def test_a_dead_broker_moves_only_the_partitions_it_led() -> None:
    before = leaders([1, 2, 3])
    after = leaders([1, 3])
    for old, new in zip(before, after, strict=True):
        assert new == old or old == 2
    assert 2 in before


def test_topics_are_spread_independently() -> None:
    assert leaders([1, 2, 3], "a") != leaders([1, 2, 3], "b")


def test_one_broker_leads_everything() -> None:
    assert set(leaders([7])) == {7}
