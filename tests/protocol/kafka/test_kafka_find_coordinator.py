"""FindCoordinator: this node on a single node; in a cluster, the live broker that rendezvous
hashing chooses for the group, named by its broker id, host and Kafka port, from the node's
broker list (set by each test)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.find_coordinator.v3.request import FindCoordinatorRequest as FindV3
from kio.schema.find_coordinator.v4.request import FindCoordinatorRequest as FindV4

from wharf.core.broker import Broker
from wharf.core.cluster_node import LiveBroker
from wharf.core.config import BrokerConfig
from wharf.core.streams.groups.placement import coordinator_for
from wharf.protocol.kafka.codec import KafkaRequest
from wharf.protocol.kafka.context import KafkaContext
from wharf.protocol.kafka.handlers import handle

BROKERS = [
    LiveBroker(1, "node-1", "10.0.0.1", 9192),
    LiveBroker(2, "node-2", "10.0.0.2", 9292),
    LiveBroker(3, "node-3", "10.0.0.3", 9392),
]


def find_v3(key: str, key_type: int = 0) -> KafkaRequest:
    return KafkaRequest(10, 3, 1, "test", FindV3(key=key, key_type=key_type), 0)


@pytest.fixture
async def context(
    two_brokers: tuple[Broker, Broker],
) -> AsyncIterator[KafkaContext]:
    """A cluster node on the real engines; its broker list is the test's to set."""
    broker = two_brokers[0]
    yield KafkaContext(broker=broker, advertised_host="10.0.0.1", advertised_port=9192)


async def test_a_single_node_names_itself(tmp_path: Path) -> None:
    async with Broker.open(tmp_path / "data", BrokerConfig(node_id=5)) as broker:
        ctx = KafkaContext(broker=broker, advertised_host="127.0.0.1", advertised_port=9092)
        response = await handle(ctx, find_v3("g"))
    assert (response.error_code, response.node_id, response.host, response.port) == (
        ErrorCode.none, 5, "127.0.0.1", 9092
    )


async def test_a_cluster_node_names_the_rendezvous_choice(context: KafkaContext) -> None:
    assert context.broker.cluster is not None
    context.broker.cluster.brokers = list(BROKERS)
    groups = [f"group-{i}" for i in range(30)]
    for group in groups:
        chosen = coordinator_for(group, BROKERS)
        assert chosen is not None
        response = await handle(context, find_v3(group))
        assert (response.error_code, response.node_id, response.host, response.port) == (
            ErrorCode.none, chosen.broker_id, chosen.host, chosen.kafka_port
        )
    find_v4 = FindV4(key_type=0, coordinator_keys=tuple(groups))
    batch = await handle(context, KafkaRequest(10, 4, 1, "test", find_v4, 0))
    assert [(c.key, c.node_id) for c in batch.coordinators] == [
        (g, coordinator_for(g, BROKERS).broker_id)  # type: ignore[union-attr]
        for g in groups
    ]
    assert len({c.node_id for c in batch.coordinators}) == 3  # the groups are spread


async def test_no_live_broker_or_a_transaction_key_is_not_available(
    context: KafkaContext,
) -> None:
    assert context.broker.cluster is not None
    context.broker.cluster.brokers = []
    assert (await handle(context, find_v3("g"))).error_code == ErrorCode.coordinator_not_available
    context.broker.cluster.brokers = list(BROKERS)
    refused = await handle(context, find_v3("tx", key_type=1))
    assert (refused.error_code, refused.node_id) == (ErrorCode.coordinator_not_available, -1)
