"""The group coordinator in cluster mode (placement.py, cluster_store.py): which node
coordinates a group, NOT_COORDINATOR from the others, and committed offsets and the current
generation carried over when the coordinator changes. Two nodes (broker ids 1 and 2) are built
by hand on one real PostgreSQL, their broker lists set by the test; the object store is not
used by groups, so the nodes have none. The database is the shared test engines'
(helpers/cluster_fixtures.py). Leases are the database's clock: the coordinators run
on the real clock and waits for an expiry are bounded polls."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import pytest
from group_helpers import join, sync

from helpers.cluster_fixtures import FAST_DATABASE
from wharf.cluster.catalog import create_topic
from wharf.cluster.database import Database
from wharf.cluster.migrations import migrate
from wharf.cluster.nodes import Membership, MembershipSettings, broker_id
from wharf.core.clock import Clock
from wharf.core.cluster_node import ClusterNode, LiveBroker
from wharf.core.config import BrokerConfig
from wharf.core.stats import CLUSTER_BUCKETS_S, HistogramFamily
from wharf.core.streams.errors import ErrorCode
from wharf.core.streams.groups.cluster_store import ClusterOffsetStore
from wharf.core.streams.groups.coordinator import GroupCoordinator
from wharf.core.streams.groups.placement import GroupPlacement, coordinator_for
from wharf.core.streams.offsets import OffsetAndMetadata, TopicPartition
from wharf.server.cluster import ClusterMember

LONG = MembershipSettings(heartbeat_interval=1.0, lease_duration=60.0)
RENEWED = MembershipSettings(heartbeat_interval=0.2, lease_duration=2.0)  # until it stops
MARGIN_S = RENEWED.lease_duration + 10.0
CONFIG = BrokerConfig(group_initial_rebalance_delay_ms=0, group_min_session_timeout_ms=100)
SESSION_MS = 30_000


def broker(broker_id: int) -> LiveBroker:
    return LiveBroker(broker_id, f"node-{broker_id}", "127.0.0.1", 9090 + broker_id)


def group_owned_by(node_id: str, brokers: list[LiveBroker]) -> str:
    return next(
        g for g in (f"group-{i}" for i in range(1000))
        if (chosen := coordinator_for(g, brokers)) is not None and chosen.node_id == node_id
    )


# -- rendezvous, no database ---------------------------------------------------------------------


def test_the_rendezvous_choice_is_stable_and_spreads_groups() -> None:
    brokers = [broker(i) for i in (1, 2, 3)]
    groups = [f"orders-{i}" for i in range(600)]
    chosen = {g: coordinator_for(g, brokers) for g in groups}

    assert all(coordinator_for(g, list(reversed(brokers))) == chosen[g] for g in groups)
    shares = Counter(b.broker_id for b in chosen.values() if b is not None)
    assert set(shares) == {1, 2, 3}
    assert min(shares.values()) >= 120  # 200 each on average

    without_3 = [b for b in brokers if b.broker_id != 3]
    for g in groups:  # only the groups broker 3 held move
        owner = chosen[g]
        assert owner is not None
        if owner.broker_id != 3:
            assert coordinator_for(g, without_3) == owner
    assert coordinator_for("g", []) is None


# -- two nodes on one database -------------------------------------------------------------------


@pytest.fixture(autouse=True)
async def connected(database_url: str) -> AsyncIterator[None]:
    """A database session named after each node ("wharf node-1"...), as a running node has:
    without one a node counts as killed and its groups may be taken at once."""
    sessions = [
        await Database.connect(database_url, node_id=f"node-{i}", settings=FAST_DATABASE)
        for i in (1, 2)
    ]
    try:
        yield
    finally:
        for session in sessions:
            await session.close()


@pytest.fixture
async def migrated(db: Database) -> Database:
    """The shared engines' fresh database for this test (helpers/cluster_fixtures.py), migrated."""
    await migrate(db)
    return db


class Node:
    """One cluster node's group coordinator, built as the broker builds it."""

    def __init__(self, db: Database, broker_id: int, settings: MembershipSettings) -> None:
        membership = Membership(db, f"node-{broker_id}", "127.0.0.1", {"kafka": 0}, settings)
        self.membership = membership
        self.cluster = ClusterNode(
            f"node-{broker_id}", broker_id, db, None, membership  # type: ignore[arg-type]
        )
        self.store = ClusterOffsetStore(self.cluster)
        self.groups = GroupCoordinator(
            CONFIG, Clock(), self.store, placement=GroupPlacement(self.cluster, self.store)
        )

    async def start(self) -> None:
        await self.membership.register()
        self.membership.start_heartbeats(lambda exc: None)
        self.groups.start()

    async def close(self) -> None:
        await self.membership.stop_heartbeats()
        self.groups.close()
        await self.groups.wait_persisted()


@pytest.fixture
async def nodes(migrated: Database) -> AsyncIterator[tuple[Node, Node]]:
    """Nodes 1 and 2, registered and heartbeating; node 1's lease is short."""
    one, two = Node(migrated, 1, RENEWED), Node(migrated, 2, LONG)
    await one.start()
    await two.start()
    try:
        yield one, two
    finally:
        await one.close()
        await two.close()


async def test_a_node_that_does_not_coordinate_the_group_answers_not_coordinator(
    nodes: tuple[Node, Node],
) -> None:
    one, two = nodes
    brokers = [broker(1), broker(2)]
    one.cluster.brokers = two.cluster.brokers = brokers
    group = group_owned_by("node-2", brokers)

    joined = await one.groups.join_group(
        group, "", protocol_type="consumer", protocols=[("range", b"")],
        session_timeout_ms=SESSION_MS,
    )
    assert joined.error is ErrorCode.NOT_COORDINATOR
    assert await one.groups.ensure_coordinator(group) is ErrorCode.NOT_COORDINATOR
    assert one.groups.heartbeat(group, "m", 1) is ErrorCode.NOT_COORDINATOR
    assert one.groups.describe_group(group).error is ErrorCode.NOT_COORDINATOR
    committed = await one.groups.commit_offsets(
        group, {TopicPartition("orders", 0): OffsetAndMetadata(5)}
    )
    assert committed == {TopicPartition("orders", 0): ErrorCode.NOT_COORDINATOR}

    member = await join(two.groups, group, session_ms=SESSION_MS)
    assert member.error is ErrorCode.NONE
    assert two.groups.heartbeat(group, member.member_id, member.generation_id) is ErrorCode.NONE


async def test_a_node_reads_the_live_nodes_again_before_it_refuses_a_group(
    migrated: Database, nodes: tuple[Node, Node]
) -> None:
    """A client sent here by a node whose list already lacks a dead node is served, not
    refused on this node's older list (as the server wires it: ClusterMember.refresh)."""
    one, two = nodes
    for node in (one, two):
        await broker_id(migrated, node.cluster.node_id)
    dead = LiveBroker(3, "node-3", "127.0.0.1", 9093)  # killed: no session, no row
    stale = [broker(1), broker(2), dead]
    group = next(
        g for g in (f"group-{i}" for i in range(1000))
        if coordinator_for(g, stale) == dead
        and (chosen := coordinator_for(g, stale[:2])) is not None and chosen.node_id == "node-2"
    )
    two.cluster.brokers = stale
    ClusterMember(two.cluster, LONG.heartbeat_interval, *[HistogramFamily(CLUSTER_BUCKETS_S)] * 2)

    assert await two.groups.ensure_coordinator(group) is ErrorCode.NONE
    assert [b.node_id for b in two.cluster.brokers] == ["node-1", "node-2"]
    member = await join(two.groups, group, session_ms=SESSION_MS)
    assert member.error is ErrorCode.NONE


async def test_offsets_and_the_generation_survive_a_coordinator_change(
    db: Database, nodes: tuple[Node, Node]
) -> None:
    one, two = nodes
    await create_topic(db, two.cluster.lease(), "orders", 2)
    one.cluster.brokers = [broker(1)]
    group = "payments"
    assert await one.groups.ensure_coordinator(group) is ErrorCode.NONE
    member = await join(one.groups, group, session_ms=SESSION_MS)
    await sync(one.groups, member, group)
    committed = await one.groups.commit_offsets(
        group,
        {TopicPartition("orders", 1): OffsetAndMetadata(42, "m", 3)},
        member_id=member.member_id,
        generation_id=member.generation_id,
    )
    assert committed == {TopicPartition("orders", 1): ErrorCode.NONE}
    await one.groups.wait_persisted()  # the Stable generation is written

    # node 1 stops heartbeating and its lease runs out; node 2 is now the only live broker
    await one.membership.stop_heartbeats()
    deadline = time.monotonic() + MARGIN_S
    while one.membership.holds_lease() or await lease_live(db, "node-1"):
        assert time.monotonic() < deadline, "node 1's lease did not end in time"
        await asyncio.sleep(0.05)
    two.cluster.brokers = [broker(2)]

    assert await two.groups.ensure_coordinator(group) is ErrorCode.NONE
    fetched = two.groups.fetch_offsets(group)
    assert {tp: (o.offset, o.metadata, o.leader_epoch) for tp, o in fetched.items()} == {
        TopicPartition("orders", 1): (42, "m", 3)
    }
    # the member carries on in its generation with the new coordinator
    assert two.groups.heartbeat(group, member.member_id, member.generation_id) is ErrorCode.NONE
    # and the old coordinator can no longer commit for the group
    stale = await one.groups.commit_offsets(
        group,
        {TopicPartition("orders", 1): OffsetAndMetadata(99)},
        member_id=member.member_id,
        generation_id=member.generation_id,
    )
    assert stale[TopicPartition("orders", 1)] in (
        ErrorCode.NOT_COORDINATOR,
        ErrorCode.COORDINATOR_NOT_AVAILABLE,
    )
    assert two.groups.fetch_offsets(group)[TopicPartition("orders", 1)].offset == 42


async def test_a_group_moves_to_a_node_that_joins_while_its_coordinator_lives(
    migrated: Database,
) -> None:
    db = migrated
    one, two = Node(db, 1, LONG), Node(db, 2, LONG)
    await one.start()
    await two.start()
    try:
        both = [broker(1), broker(2)]
        group = group_owned_by("node-2", both)
        one.cluster.brokers = [broker(1)]
        member = await join(one.groups, group, session_ms=SESSION_MS)
        await sync(one.groups, member, group)
        await one.groups.wait_persisted()
        two.cluster.brokers = both
        # node 1 still holds the claim: node 2 waits for it
        assert await two.groups.ensure_coordinator(group) is ErrorCode.COORDINATOR_NOT_AVAILABLE

        one.cluster.brokers = both  # node 1 learns of node 2: it drops the group, releases it
        assert await one.groups.ensure_coordinator(group) is ErrorCode.NOT_COORDINATOR
        assert one.groups.heartbeat(group, member.member_id, member.generation_id) is (
            ErrorCode.NOT_COORDINATOR
        )
        await one.groups.wait_persisted()

        assert await two.groups.ensure_coordinator(group) is ErrorCode.NONE
        assert two.groups.heartbeat(group, member.member_id, member.generation_id) is (
            ErrorCode.NONE
        )
    finally:
        await one.close()
        await two.close()


async def lease_live(db: Database, node_id: str) -> bool:
    async with db.transaction() as tx:
        return bool(
            await tx.fetchval(
                "SELECT lease_expires_at > clock_timestamp() FROM nodes WHERE id = %s",
                (node_id,),
            )
        )
