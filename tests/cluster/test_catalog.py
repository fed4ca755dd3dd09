"""The cluster's topic catalogue and producer ids against a real PostgreSQL: create, describe,
list, grow, alter and delete; concurrent creators and allocators on separate clients; and the
fence: a stale lease changes nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from wharf.cluster.catalog import (
    NodeLease,
    PartitionInfo,
    allocate_producer_id,
    alter_configs,
    create_partitions,
    create_topic,
    delete_topic,
    describe_topic,
    list_topics,
)
from wharf.cluster.database import Database, DatabaseSettings
from wharf.cluster.migrations import migrate
from wharf.cluster.nodes import LeaseLostError, Membership, MembershipSettings
from wharf.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError

BOUND_S = 30.0
LONG = MembershipSettings(heartbeat_interval=1.0, lease_duration=60.0)


async def register(db: Database, node_id: str) -> NodeLease:
    membership = Membership(db, node_id, "127.0.0.1", {"kafka": 9092}, LONG)
    await membership.register()
    return NodeLease.of(membership)


@pytest.fixture
async def lease(db: Database) -> AsyncIterator[NodeLease]:
    await migrate(db)
    yield await register(db, "node-a")


async def counts(db: Database) -> tuple[int, int]:
    async with db.transaction() as tx:
        topics = await tx.fetchval("SELECT count(*) FROM stream_topics")
        partitions = await tx.fetchval("SELECT count(*) FROM stream_partitions")
    return int(topics), int(partitions)


async def test_a_created_topic_is_described_and_listed(db: Database, lease: NodeLease) -> None:
    created = await create_topic(db, lease, "orders", 3, {"retention.ms": "1000"})
    assert isinstance(created.topic_id, uuid.UUID)
    described = await describe_topic(db, "orders")
    assert described.topic_id == created.topic_id
    assert described.name == "orders"
    assert described.configs == {"retention.ms": "1000"}
    assert described.partitions == [PartitionInfo(i, 0, 0, 0) for i in range(3)]
    await create_topic(db, lease, "audit", 1)
    assert [t.name for t in await list_topics(db)] == ["audit", "orders"]


async def test_partitions_show_their_log_start_and_next_offset(
    db: Database, lease: NodeLease
) -> None:
    created = await create_topic(db, lease, "t", 2)
    async with db.transaction() as tx:
        await tx.execute(
            "UPDATE stream_partitions SET next_offset = 42, log_start_offset = 7, bytes = 900"
            " WHERE topic_id = %s AND partition = 1",
            (created.topic_id,),
        )
    assert (await describe_topic(db, "t")).partitions == [
        PartitionInfo(0, 0, 0, 0),
        PartitionInfo(1, 7, 42, 900),
    ]


async def test_a_duplicate_name_is_refused(db: Database, lease: NodeLease) -> None:
    first = await create_topic(db, lease, "orders", 2)
    with pytest.raises(AlreadyExistsError, match="'orders' already exists"):
        await create_topic(db, lease, "orders", 5)
    assert (await describe_topic(db, "orders")).topic_id == first.topic_id
    assert await counts(db) == (1, 2)


async def test_names_differing_only_by_dot_and_underscore_collide(
    db: Database, lease: NodeLease
) -> None:
    await create_topic(db, lease, "a.b", 1)
    with pytest.raises(InvalidArgumentError, match="collides with 'a.b'"):
        await create_topic(db, lease, "a_b", 1)
    assert await counts(db) == (1, 1)


@pytest.mark.parametrize(("name", "partitions"), [("", 1), ("..", 1), ("a b", 1), ("t", 0)])
async def test_an_illegal_name_or_count_is_refused(
    db: Database, lease: NodeLease, name: str, partitions: int
) -> None:
    with pytest.raises(InvalidArgumentError):
        await create_topic(db, lease, name, partitions)
    assert await counts(db) == (0, 0)


async def test_a_deleted_topic_is_gone_and_its_name_free_again(
    db: Database, lease: NodeLease
) -> None:
    first = await create_topic(db, lease, "orders", 1)
    assert await delete_topic(db, lease, "orders") == first.topic_id
    with pytest.raises(NotFoundError, match="no topic 'orders'"):
        await describe_topic(db, "orders")
    assert await list_topics(db) == []
    with pytest.raises(NotFoundError):
        await delete_topic(db, lease, "orders")
    second = await create_topic(db, lease, "orders", 2)
    assert second.topic_id != first.topic_id  # a new topic, a new id
    assert [t.topic_id for t in await list_topics(db)] == [second.topic_id]


async def test_partitions_only_grow(db: Database, lease: NodeLease) -> None:
    await create_topic(db, lease, "t", 2)
    grown = await create_partitions(db, lease, "t", 5)
    assert [p.partition for p in grown.partitions] == [0, 1, 2, 3, 4]
    for total in (5, 3):
        with pytest.raises(InvalidArgumentError, match="has 5 partitions"):
            await create_partitions(db, lease, "t", total)
    assert len((await describe_topic(db, "t")).partitions) == 5
    with pytest.raises(NotFoundError):
        await create_partitions(db, lease, "missing", 3)


async def test_configs_are_set_deleted_or_replaced(db: Database, lease: NodeLease) -> None:
    await create_topic(db, lease, "t", 1, {"retention.ms": "1000", "cleanup.policy": "delete"})
    assert await alter_configs(
        db, lease, "t", {"segment.bytes": "4096"}, ["cleanup.policy"]
    ) == {"retention.ms": "1000", "segment.bytes": "4096"}
    assert await alter_configs(db, lease, "t", {"max.message.bytes": "10"}, replace=True) == {
        "max.message.bytes": "10"
    }
    assert (await describe_topic(db, "t")).configs == {"max.message.bytes": "10"}
    with pytest.raises(NotFoundError):
        await alter_configs(db, lease, "missing", {"a": "b"})


async def test_of_two_concurrent_creators_of_one_name_exactly_one_wins(
    database_url: str, database_settings: DatabaseSettings, db: Database, lease: NodeLease
) -> None:
    other_db = await Database.connect(database_url, settings=database_settings)
    try:
        other = await register(other_db, "node-b")
        for round_ in range(10):
            name = f"race-{round_}"
            async with asyncio.timeout(BOUND_S):
                results = await asyncio.gather(
                    create_topic(db, lease, name, 3),
                    create_topic(other_db, other, name, 4),
                    return_exceptions=True,
                )
            won = [r for r in results if not isinstance(r, BaseException)]
            lost = [r for r in results if isinstance(r, BaseException)]
            assert len(won) == 1 and len(lost) == 1, results
            assert isinstance(lost[0], AlreadyExistsError)
            described = await describe_topic(db, name)
            assert described.topic_id == won[0].topic_id
            assert len(described.partitions) == len(won[0].partitions)
        partitions = sum(len(t.partitions) for t in await list_topics(db))
        assert await counts(db) == (10, partitions)
    finally:
        await other_db.close()


async def test_producer_ids_are_unique_across_clients(
    database_url: str, database_settings: DatabaseSettings, db: Database, lease: NodeLease
) -> None:
    other_db = await Database.connect(database_url, settings=database_settings)
    try:
        other = await register(other_db, "node-b")

        async def allocate(database: Database, holder: NodeLease) -> list[int]:
            return [await allocate_producer_id(database, holder) for _ in range(200)]

        async with asyncio.timeout(BOUND_S * 2):
            batches = await asyncio.gather(
                allocate(db, lease), allocate(other_db, other), allocate(db, lease)
            )
        ids = [i for batch in batches for i in batch]
        assert len(ids) == 600 and len(set(ids)) == 600
        assert min(ids) >= 0
        for batch in batches:
            assert batch == sorted(batch)  # one client's ids only grow
    finally:
        await other_db.close()


async def _expire(db: Database, node_id: str) -> None:
    async with db.transaction() as tx:
        await tx.execute(
            "UPDATE nodes SET lease_expires_at = clock_timestamp() WHERE id = %s", (node_id,)
        )


async def _supersede(db: Database, node_id: str) -> None:
    await register(db, node_id)  # the same node registered again: a new epoch


@pytest.mark.parametrize("staleness", [_expire, _supersede])
async def test_a_stale_lease_is_refused_and_writes_nothing(
    db: Database, lease: NodeLease, staleness: Callable[[Database, str], Awaitable[None]]
) -> None:
    await create_topic(db, lease, "kept", 2, {"a": "1"})
    before = await list_topics(db)
    async with db.transaction() as tx:
        sequence_before = await tx.fetchval("SELECT last_value FROM stream_producer_id_seq")
    await staleness(db, lease.node_id)
    attempts = [
        create_topic(db, lease, "new", 1),
        delete_topic(db, lease, "kept"),
        create_partitions(db, lease, "kept", 4),
        alter_configs(db, lease, "kept", {"a": "2"}),
        allocate_producer_id(db, lease),
    ]
    for attempt in attempts:
        with pytest.raises(LeaseLostError, match=f"epoch {lease.epoch} expired or was replaced"):
            await attempt
    assert await list_topics(db) == before
    assert await counts(db) == (1, 2)
    async with db.transaction() as tx:
        assert await tx.fetchval("SELECT last_value FROM stream_producer_id_seq") == (
            sequence_before
        )


async def test_a_membership_without_a_lease_has_no_token(db: Database) -> None:
    await migrate(db)
    membership = Membership(db, "node-c", "127.0.0.1", {"kafka": 9092}, LONG)
    with pytest.raises(LeaseLostError, match="node-c holds no lease"):
        NodeLease.of(membership)
