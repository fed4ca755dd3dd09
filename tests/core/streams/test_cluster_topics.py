"""Two brokers in cluster mode on one database and one object store: the topic catalogue as
each node sees it (created on one node, usable on the other at once; deleted, grown, altered),
producer ids unique across nodes, and records produced on one node fetched on the other."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from wharf.core.broker import Broker
from wharf.core.cluster_node import LiveBroker
from wharf.core.streams.errors import (
    ErrorCode,
    InvalidConfigError,
    InvalidPartitionsError,
    StreamsError,
    TopicExistsError,
    UnknownTopicError,
)

BOUND_S = 30.0
async def _until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for ``condition()`` to hold: notifications arrive when they arrive."""
    async with asyncio.timeout(BOUND_S):
        while not condition():
            await asyncio.sleep(0.01)


async def test_a_topic_created_on_one_node_is_usable_on_the_other_at_once(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    created = await one.create_topic("orders", 3, {"retention.ms": "60000"})
    # the other node re-reads the catalogue on a miss, before answering UNKNOWN_TOPIC
    seen = await two.topics.ensure("orders")
    assert (seen.topic_id, len(seen.partitions)) == (created.topic_id, 3)
    assert {e.name: e.value for e in two.topics.describe_configs("orders")}["retention.ms"] == (
        "60000"
    )
    # and hears of the next one without being asked
    later = await one.create_topic("audit", 1)
    await _until(lambda: two.topics.find("audit") is not None)
    assert two.topics.get("audit").topic_id == later.topic_id
    assert [t.name for t in two.topics.list()] == ["audit", "orders"]


async def test_one_name_created_on_both_nodes_is_created_once(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    outcomes = await asyncio.gather(
        one.create_topic("race", 2), two.create_topic("race", 4), return_exceptions=True
    )
    winners = [o for o in outcomes if not isinstance(o, BaseException)]
    losers = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(winners) == 1 and len(losers) == 1
    assert isinstance(losers[0], TopicExistsError)
    await two.topics.reload()
    assert two.topics.get("race").topic_id == one.topics.get("race").topic_id


async def test_unknown_topics_stay_unknown_and_illegal_ones_are_refused(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, _ = two_brokers
    with pytest.raises(UnknownTopicError):
        await one.topics.ensure("missing")  # auto-creation is off
    with pytest.raises(InvalidPartitionsError):
        await one.create_topic("none", 0)
    with pytest.raises(InvalidConfigError):
        await one.create_topic("bad", 1, {"retention.ms": "soon"})
    await one.topics.reload()
    assert one.topics.list() == []


async def test_delete_on_one_node_removes_the_topic_from_both(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.create_topic("gone", 2)
    await two.topics.ensure("gone")
    kept = two.topics.partition("gone", 1)
    await two.delete_topic("gone")
    assert two.topics.find("gone") is None
    await _until(lambda: one.topics.find("gone") is None)
    with pytest.raises(UnknownTopicError):
        await kept.fetch(0, 1024)
    with pytest.raises(UnknownTopicError):
        await one.delete_topic("gone")
    again = await one.create_topic("gone", 1)  # the name is free again, with a new id
    assert (await two.topics.ensure("gone")).topic_id == again.topic_id


async def test_partitions_and_configs_changed_on_one_node_show_on_the_other(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.create_topic("grow", 2)
    await two.topics.add_partitions("grow", 5)
    await _until(lambda: one.topics.partition_exists("grow", 4))
    assert len(one.topics.get("grow").partitions) == 5
    with pytest.raises(InvalidPartitionsError):
        await one.topics.add_partitions("grow", 5)

    await one.topics.alter_configs("grow", {"cleanup.policy": "compact", "retention.ms": "5"})
    await two.topics.alter_configs("grow", {"retention.ms": "7"}, ["cleanup.policy"])
    await _until(lambda: one.topics.get("grow").overrides == {"retention.ms": "7"})
    with pytest.raises(InvalidConfigError):  # validated before the catalogue is written
        await one.topics.alter_configs("grow", {"max.message.bytes": "-3"})
    await two.topics.reload()
    assert two.topics.get("grow").overrides == {"retention.ms": "7"}
    await one.topics.alter_configs("grow", {"segment.ms": "1000"}, replace=True)
    await _until(lambda: two.topics.get("grow").overrides == {"segment.ms": "1000"})


async def test_producer_ids_are_unique_across_nodes(two_brokers: tuple[Broker, Broker]) -> None:
    one, two = two_brokers
    drawn = await asyncio.gather(
        *(broker.init_producer_id() for broker in (one, two) for _ in range(40))
    )
    assert {epoch for _, epoch in drawn} == {0}
    assert len({pid for pid, _ in drawn}) == 80
    pid, _ = drawn[0]
    assert await two.init_producer_id(pid, 0) == (pid, 1)  # KIP-360: the next epoch
    with pytest.raises(StreamsError) as refused:
        await one.init_producer_id(pid, -1)
    assert refused.value.code is ErrorCode.INVALID_PRODUCER_ID_MAPPING


async def test_any_replication_factor_up_to_the_live_nodes_is_accepted(
    two_brokers: tuple[Broker, Broker],
) -> None:
    # Tools ask for 3 replicas; durability is the object store's, so any factor the live
    # nodes could hold is fine, and more than there are nodes is refused as Kafka does.
    first, _ = two_brokers
    assert first.cluster is not None
    first.cluster.brokers = [
        LiveBroker(i, f"node-{i}", "127.0.0.1", 9090 + i) for i in (1, 2, 3)
    ]
    await first.topics.create("replicated", 1, replication_factor=3)
    assert first.topics.find("replicated") is not None
    with pytest.raises(StreamsError) as refused:
        await first.topics.create("too-many", 1, replication_factor=4)
    assert refused.value.code is ErrorCode.INVALID_REPLICATION_FACTOR
    assert "3 live" in str(refused.value)
