"""Schema migrations against a real PostgreSQL: from empty, re-run, racing nodes, and refusal of
a schema newer than the code."""

from __future__ import annotations

import asyncio
import re

import psycopg
import pytest

from wharf.cluster.database import Database, DatabaseError, DatabaseSettings
from wharf.cluster.migrations import (
    MIGRATIONS,
    Migration,
    SchemaVersionError,
    migrate,
    schema_version,
)
from wharf.errors import StorageError

BOUND_S = 20.0
FIRST = Migration(1, "a table", "CREATE TABLE a (x int)")
SECOND = Migration(2, "another", "CREATE TABLE b (y int); INSERT INTO b VALUES (1)")


async def _version(db: Database) -> int:
    async with db.transaction() as tx:
        return await schema_version(tx)


async def _history(db: Database) -> list[tuple[int, str]]:
    async with db.transaction() as tx:
        rows = await tx.fetchall("SELECT version, description FROM wharf_schema ORDER BY 1")
    return [(int(v), str(d)) for v, d in rows]


async def test_migrating_an_empty_database_applies_every_migration(db: Database) -> None:
    assert await _version(db) == 0
    assert await migrate(db) == len(MIGRATIONS)
    assert await _history(db) == [(m.version, m.description) for m in MIGRATIONS]
    async with db.transaction() as tx:
        columns = await tx.fetchall(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'nodes' ORDER BY ordinal_position"
        )
    assert [c for (c,) in columns] == [
        "id",
        "epoch",
        "host",
        "listeners",
        "started_at",
        "last_heartbeat",
        "lease_expires_at",
    ]


async def test_migrating_again_changes_nothing(db: Database) -> None:
    await migrate(db)
    before = await _history(db)
    assert await migrate(db) == len(MIGRATIONS)
    assert await _history(db) == before


async def test_only_the_missing_migrations_run(db: Database) -> None:
    assert await migrate(db, (FIRST,)) == 1
    async with db.transaction() as tx:
        await tx.execute("INSERT INTO a VALUES (7)")
    assert await migrate(db, (FIRST, SECOND)) == 2
    async with db.transaction() as tx:
        assert await tx.fetchval("SELECT x FROM a") == 7  # migration 1 did not run again
        assert await tx.fetchval("SELECT count(*) FROM b") == 1


async def test_nodes_starting_together_migrate_once(
    database_url: str, database_settings: DatabaseSettings
) -> None:
    # a slow migration widens the window in which racing migrators would collide
    slow = (Migration(1, "slow", "CREATE TABLE a (x int); SELECT pg_sleep(0.3)"), SECOND)
    databases = [
        await Database.connect(database_url, settings=database_settings) for _ in range(4)
    ]
    try:
        async with asyncio.timeout(BOUND_S):
            versions = await asyncio.gather(*(migrate(d, slow) for d in databases))
        assert versions == [2, 2, 2, 2]
        assert await _history(databases[0]) == [(1, "slow"), (2, "another")]
        async with databases[0].transaction() as tx:
            assert await tx.fetchval("SELECT count(*) FROM b") == 1
    finally:
        for database in databases:
            await database.close()


async def test_a_newer_schema_is_refused_naming_both_versions(db: Database) -> None:
    await migrate(db, (FIRST, SECOND))
    with pytest.raises(SchemaVersionError) as caught:
        await migrate(db, (FIRST,))
    assert isinstance(caught.value, StorageError)
    message = str(caught.value)
    assert "version 2" in message and "version 1" in message and db.name in message
    assert await _version(db) == 2


async def test_a_failing_migration_leaves_the_schema_as_it_was(db: Database) -> None:
    broken = Migration(2, "broken", "CREATE TABLE b (y int); SELECT no_such_column FROM b")
    with pytest.raises(DatabaseError, match="no_such_column"):
        await migrate(db, (FIRST, broken))
    assert await _version(db) == 0
    async with db.transaction() as tx:
        assert await tx.fetchval("SELECT to_regclass('a')") is None


async def test_migrations_must_be_numbered_without_gaps(db: Database) -> None:
    with pytest.raises(ValueError, match="without gaps"):
        await migrate(db, (FIRST, Migration(3, "gap", "SELECT 1")))
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))


STREAM_TABLES = [
    "stream_batches",
    "stream_committed_offsets",
    "stream_groups",
    "stream_leases",
    "stream_objects",
    "stream_partitions",
    "stream_producers",
    "stream_topics",
]


async def _stream_tables(db: Database) -> list[str]:
    async with db.transaction() as tx:
        rows = await tx.fetchall(
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_name LIKE 'stream\\_%%' ORDER BY 1"
        )
    return [t for (t,) in rows]


async def test_migration_2_creates_the_streams_tables_from_empty(db: Database) -> None:
    assert await migrate(db, MIGRATIONS[:2]) == 2
    assert await _stream_tables(db) == STREAM_TABLES
    async with db.transaction() as tx:
        assert await tx.fetchval("SELECT nextval('stream_producer_id_seq')") == 0
        columns = await tx.fetchall(
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = 'stream_partitions' ORDER BY ordinal_position"
        )
    assert [c for (c,) in columns] == [
        "topic_id",
        "partition",
        "next_offset",
        "log_start_offset",
        "bytes",
    ]


async def test_migration_2_applies_over_1_keeping_the_nodes(db: Database) -> None:
    assert await migrate(db, MIGRATIONS[:1]) == 1
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO nodes VALUES ('n', 1, 'h', '{}', now(), now(), now())"
        )
    assert await _stream_tables(db) == []
    assert await migrate(db, MIGRATIONS[:2]) == 2
    assert await _stream_tables(db) == STREAM_TABLES
    assert await _history(db) == [(m.version, m.description) for m in MIGRATIONS[:2]]
    async with db.transaction() as tx:
        assert await tx.fetchval("SELECT id FROM nodes") == "n"


async def test_a_live_topic_name_is_unique_but_a_deleted_one_is_not(db: Database) -> None:
    await migrate(db, MIGRATIONS[:2])
    insert = (
        "INSERT INTO stream_topics (topic_id, name, partitions, created_at, deleted_at)"
        " VALUES (gen_random_uuid(), 't', 1, now(), %s)"
    )
    async with db.transaction() as tx:
        await tx.execute(insert, (None,))
        await tx.execute("UPDATE stream_topics SET deleted_at = now()")
        await tx.execute(insert, (None,))
    with pytest.raises(DatabaseError, match="23505"):
        async with db.transaction() as tx:
            await tx.execute(insert, (None,))


async def test_migration_3_applies_over_2_with_a_cluster_id_and_broker_ids(db: Database) -> None:
    assert await migrate(db, MIGRATIONS[:2]) == 2
    assert await migrate(db, MIGRATIONS[:3]) == 3
    async with db.transaction() as tx:
        cluster_ids = await tx.fetchall("SELECT cluster_id FROM cluster_info")
        await tx.execute("INSERT INTO cluster_broker_ids (node_id) VALUES ('a'), ('b')")
        ids = await tx.fetchall("SELECT broker_id FROM cluster_broker_ids ORDER BY node_id")
    (cluster_id,) = (c for (c,) in cluster_ids)  # exactly one row
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id)  # Kafka's shape: a UUID, base64url
    first, second = (b for (b,) in ids)
    assert second > first
    with pytest.raises(DatabaseError, match="23505"):  # a second cluster_info row
        async with db.transaction() as tx:
            await tx.execute("INSERT INTO cluster_info (cluster_id) VALUES ('other')")


CHURNING = (
    "amqp_messages", "amqp_bodies", "amqp_held", "amqp_replies", "amqp_consumers",
    "stream_batches", "stream_objects",
)  # fmt: skip


async def test_tables_whose_rows_come_and_go_are_not_truncated_by_vacuum(
    db: Database, database_url: str
) -> None:
    """A vacuum's truncation locks a table against every statement (claims, acks, flushes of
    every node stalled 40-250 ms behind it): the emptied tail of a queue table stays, for new
    rows to reuse."""
    await migrate(db)
    async with db.transaction() as tx:
        options = dict(
            await tx.fetchall(
                "SELECT relname, reloptions FROM pg_class WHERE relname = ANY(%s)",
                (list(CHURNING),),
            )
        )
        await tx.execute(
            "INSERT INTO amqp_replies (broker_id, vhost, routing_key, properties, body)"
            " SELECT 1, '/', 'r', '', repeat('x', 500)::bytea FROM generate_series(1, 2000)"
        )
        await tx.execute("DELETE FROM amqp_replies")
    assert all("vacuum_truncate=false" in (options[t] or []) for t in CHURNING), options
    async with db.transaction() as tx:
        before = await tx.fetchval("SELECT pg_relation_size('amqp_replies')")
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as vacuum:
        await vacuum.execute("VACUUM amqp_replies")  # not inside a transaction
    async with db.transaction() as tx:
        after = await tx.fetchval("SELECT pg_relation_size('amqp_replies')")
    assert before > 0
    assert after == before
