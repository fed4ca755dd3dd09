"""Consumer groups in the catalogue database (``wharf.cluster.groups``) against a real
PostgreSQL: claims and takeover on the database's lease clock, fenced commits, offsets round
trips. Leases are the database's clock, so waits for an expiry are bounded polls."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from helpers.cluster_fixtures import FAST_DATABASE
from wharf.cluster.catalog import NodeLease, create_topic, delete_topic
from wharf.cluster.database import Database
from wharf.cluster.groups import (
    ClaimStatus,
    CommitStatus,
    GroupMovedError,
    NewOffset,
    StoredGroup,
    claim_group,
    commit_offsets,
    delete_group,
    delete_offsets,
    fetch_offsets,
    list_groups,
    release_group,
    store_group,
)
from wharf.cluster.nodes import LeaseLostError, Membership, MembershipSettings

SHORT = MembershipSettings(heartbeat_interval=0.1, lease_duration=0.5)
MARGIN_S = SHORT.lease_duration + 10.0


@pytest.fixture(autouse=True)
async def connected(database_url: str) -> AsyncIterator[None]:
    """A database session of each node's own ("wharf node-a"...), as a running node has: a node
    with none left (killed) loses its groups before its lease ends, which one test checks with a
    node of its own; in the others, leases alone decide."""
    sessions = [
        await Database.connect(database_url, node_id=name, settings=FAST_DATABASE)
        for name in ("node-a", "node-b", "node-c")
    ]
    try:
        yield
    finally:
        for session in sessions:
            await session.close()


async def register(db: Database, node_id: str, settings: MembershipSettings = SHORT) -> Membership:
    membership = Membership(db, node_id, "127.0.0.1", {"kafka": 9092}, settings)
    await membership.register()
    return membership


async def lease_expired(db: Database, lease: NodeLease) -> None:
    """Wait (bounded) until the database's clock says ``lease`` ended."""
    deadline = time.monotonic() + MARGIN_S
    while True:
        async with db.transaction() as tx:
            live = await tx.fetchval(
                "SELECT lease_expires_at > clock_timestamp() FROM nodes WHERE id = %s",
                (lease.node_id,),
            )
        if not live:
            return
        assert time.monotonic() < deadline, "the lease did not expire in time"
        await asyncio.sleep(0.05)


async def test_a_new_group_is_claimed_and_claiming_again_is_idempotent(
    db: Database, node_lease: NodeLease
) -> None:
    first = await claim_group(db, node_lease, "g")
    assert first.status is ClaimStatus.CLAIMED
    assert first.group == StoredGroup()
    assert first.offsets == {}
    again = await claim_group(db, node_lease, "g")
    assert again.status is ClaimStatus.CLAIMED
    assert await list_groups(db) == ["g"]


async def test_a_live_holder_keeps_its_group(db: Database, node_lease: NodeLease) -> None:
    other = await register(db, "node-b", MembershipSettings(lease_duration=60.0))
    assert (await claim_group(db, node_lease, "g")).status is ClaimStatus.CLAIMED
    refused = await claim_group(db, NodeLease.of(other), "g")
    assert refused.status is ClaimStatus.HELD_ELSEWHERE
    assert refused.holder == "node-a"


async def test_a_holder_whose_sessions_are_gone_loses_its_group_before_its_lease_ends(
    db: Database, node_lease: NodeLease, database_url: str
) -> None:
    # kill -9 closes a node's connections at once; its groups move then, not 5 s later. Its
    # writes stay fenced by the group row, which names the new coordinator.
    killed_db = await Database.connect(database_url, node_id="node-k", settings=FAST_DATABASE)
    long_lease = MembershipSettings(lease_duration=60.0)
    killed = NodeLease.of(await register(killed_db, "node-k", long_lease))
    assert (await claim_group(killed_db, killed, "g")).status is ClaimStatus.CLAIMED
    assert (await claim_group(db, node_lease, "g")).status is ClaimStatus.HELD_ELSEWHERE
    await killed_db.close()
    deadline = time.monotonic() + MARGIN_S
    while (await claim_group(db, node_lease, "g")).status is not ClaimStatus.CLAIMED:
        assert time.monotonic() < deadline, "the group was not taken over"
        await asyncio.sleep(0.05)
    with pytest.raises(GroupMovedError):
        await store_group(db, killed, "g", StoredGroup())


async def test_a_group_is_taken_over_once_its_holder_s_lease_expires(
    db: Database, node_lease: NodeLease
) -> None:
    await create_topic(db, node_lease, "orders", 2)
    short = await register(db, "node-b")  # no heartbeats: the lease runs out
    old = NodeLease.of(short)
    assert (await claim_group(db, old, "g")).status is ClaimStatus.CLAIMED
    await commit_offsets(db, old, "g", {("orders", 1): NewOffset(42, 3, "m")})
    await store_group(db, old, "g", StoredGroup(5, "consumer", "range", "m-1", "Stable", {"x": 1}))

    assert (await claim_group(db, node_lease, "g")).status is ClaimStatus.HELD_ELSEWHERE
    await lease_expired(db, old)
    taken = await claim_group(db, node_lease, "g")

    assert taken.status is ClaimStatus.CLAIMED
    assert taken.group == StoredGroup(5, "consumer", "range", "m-1", "Stable", {"x": 1})
    assert {tp: c.offset for tp, c in taken.offsets.items()} == {("orders", 1): 42}
    assert taken.offsets[("orders", 1)].leader_epoch == 3
    assert taken.offsets[("orders", 1)].metadata == "m"


async def test_a_stale_coordinator_s_commit_is_refused_and_writes_nothing(
    db: Database, node_lease: NodeLease
) -> None:
    await create_topic(db, node_lease, "orders", 1)
    stale = await register(db, "node-b")
    old = NodeLease.of(stale)
    assert (await claim_group(db, old, "g")).status is ClaimStatus.CLAIMED
    await commit_offsets(db, old, "g", {("orders", 0): NewOffset(1)})
    await lease_expired(db, old)
    assert (await claim_group(db, node_lease, "g")).status is ClaimStatus.CLAIMED

    with pytest.raises(LeaseLostError, match="node-b"):
        await commit_offsets(db, old, "g", {("orders", 0): NewOffset(99)})
    assert {tp: c.offset for tp, c in (await fetch_offsets(db, "g")).items()} == {
        ("orders", 0): 1
    }


async def test_a_live_node_that_lost_the_group_cannot_write_for_it(
    db: Database, node_lease: NodeLease
) -> None:
    await create_topic(db, node_lease, "orders", 1)
    other = NodeLease.of(await register(db, "node-b", MembershipSettings(lease_duration=60.0)))
    assert (await claim_group(db, node_lease, "g")).status is ClaimStatus.CLAIMED
    assert await release_group(db, node_lease, "g")
    assert (await claim_group(db, other, "g")).status is ClaimStatus.CLAIMED

    with pytest.raises(GroupMovedError, match="node-b"):
        await commit_offsets(db, node_lease, "g", {("orders", 0): NewOffset(7)})
    with pytest.raises(GroupMovedError):
        await store_group(db, node_lease, "g", StoredGroup(1))
    assert await fetch_offsets(db, "g") == {}
    assert not await release_group(db, node_lease, "g")  # not its group any more


async def test_commits_and_fetches_round_trip(db: Database, node_lease: NodeLease) -> None:
    await create_topic(db, node_lease, "orders", 2)
    await create_topic(db, node_lease, "audit", 1)
    await claim_group(db, node_lease, "g")
    statuses, committed_at = await commit_offsets(
        db,
        node_lease,
        "g",
        {
            ("orders", 0): NewOffset(10),
            ("orders", 1): NewOffset(11, 2, "meta"),
            ("orders", 2): NewOffset(12),  # beyond the partition count
            ("missing", 0): NewOffset(13),
            ("audit", 0): NewOffset(14),
        },
    )
    assert statuses == {
        ("orders", 0): CommitStatus.COMMITTED,
        ("orders", 1): CommitStatus.COMMITTED,
        ("orders", 2): CommitStatus.UNKNOWN_PARTITION,
        ("missing", 0): CommitStatus.UNKNOWN_PARTITION,
        ("audit", 0): CommitStatus.COMMITTED,
    }
    await commit_offsets(db, node_lease, "g", {("orders", 0): NewOffset(20)})

    fetched = await fetch_offsets(db, "g")
    assert {tp: c.offset for tp, c in fetched.items()} == {
        ("orders", 0): 20,
        ("orders", 1): 11,
        ("audit", 0): 14,
    }
    assert (fetched[("orders", 1)].leader_epoch, fetched[("orders", 1)].metadata) == (2, "meta")
    assert fetched[("audit", 0)].committed_at_ms == committed_at

    await delete_offsets(db, node_lease, "g", [("orders", 1)])
    assert set(await fetch_offsets(db, "g")) == {("orders", 0), ("audit", 0)}
    await delete_topic(db, node_lease, "audit")  # offsets of a deleted topic are not shown
    assert set(await fetch_offsets(db, "g")) == {("orders", 0)}

    await delete_group(db, node_lease, "g")
    assert await fetch_offsets(db, "g") == {}
    assert await list_groups(db) == []


async def test_two_nodes_racing_for_one_group_one_wins(
    db: Database, node_lease: NodeLease
) -> None:
    other = NodeLease.of(await register(db, "node-b", MembershipSettings(lease_duration=60.0)))
    for round_ in range(5):
        group = f"g{round_}"
        claims = await asyncio.gather(
            claim_group(db, node_lease, group), claim_group(db, other, group)
        )
        winners = [c for c in claims if c.status is ClaimStatus.CLAIMED]
        assert len(winners) == 1, claims
        loser = next(c for c in claims if c.status is ClaimStatus.HELD_ELSEWHERE)
        assert loser.holder in ("node-a", "node-b")


async def test_two_nodes_racing_to_take_over_a_dead_node_s_group_one_wins(
    db: Database, node_lease: NodeLease
) -> None:
    dead = NodeLease.of(await register(db, "node-c"))
    other = NodeLease.of(await register(db, "node-b", MembershipSettings(lease_duration=60.0)))
    groups = [f"g{i}" for i in range(5)]
    for group in groups:
        await claim_group(db, dead, group)
    await lease_expired(db, dead)
    for group in groups:
        claims = await asyncio.gather(
            claim_group(db, node_lease, group), claim_group(db, other, group)
        )
        assert sorted(c.status.value for c in claims) == ["claimed", "held elsewhere"]
