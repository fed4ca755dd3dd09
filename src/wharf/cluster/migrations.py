"""Versioned schema migrations of the catalogue database.

How it works: :data:`MIGRATIONS` is the ordered list of every schema change Wharf ever made, each
a version (1, 2, 3... with no gaps) and its SQL; a released migration is never edited, a change
is a new migration. The table ``wharf_schema`` holds one row per applied migration (version,
description, when), so its highest version is the schema's.

:func:`migrate` runs on every node's start, in one transaction: it takes a transaction-level
advisory lock (``pg_advisory_xact_lock``, released by the commit), so nodes starting together
queue behind each other instead of racing; creates ``wharf_schema`` if missing; reads the
version; applies the missing migrations in order; records them; commits. A node that waited for
the lock finds the work done and changes nothing. PostgreSQL's DDL is transactional, so a failed
migration leaves the schema as it was.

A database whose schema is *newer* than the code's last migration was migrated by a newer Wharf:
this node refuses to run against it (:class:`SchemaVersionError`, naming both versions) rather
than read or write tables whose meaning it does not know.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import LiteralString

from wharf.cluster.database import Database, DatabaseError, Transaction

__all__ = ["MIGRATIONS", "Migration", "SchemaVersionError", "migrate", "schema_version"]

# "wharf_sc" in ASCII: the advisory-lock key every node's migrator takes.
_LOCK_KEY = 0x77686172665F7363


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: LiteralString


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "nodes: membership, with a lease per registration",
        """
        CREATE TABLE nodes (
            id               text        PRIMARY KEY,
            epoch            bigint      NOT NULL UNIQUE,
            host             text        NOT NULL,
            listeners        jsonb       NOT NULL,
            started_at       timestamptz NOT NULL,
            last_heartbeat   timestamptz NOT NULL,
            lease_expires_at timestamptz NOT NULL
        );
        CREATE SEQUENCE nodes_epoch_seq OWNED BY nodes.epoch;
        """,
    ),
)


class SchemaVersionError(DatabaseError):
    """The database's schema is newer than this Wharf knows: it will not run against it."""


_CREATE_SCHEMA_TABLE: LiteralString = """
    CREATE TABLE IF NOT EXISTS wharf_schema (
        version     integer     PRIMARY KEY,
        description text        NOT NULL,
        applied_at  timestamptz NOT NULL DEFAULT now()
    )
"""


async def schema_version(tx: Transaction) -> int:
    """The highest applied migration (0 for an empty database)."""
    exists = await tx.fetchval("SELECT to_regclass('wharf_schema') IS NOT NULL")
    if not exists:
        return 0
    version = await tx.fetchval("SELECT max(version) FROM wharf_schema")
    return int(version or 0)


async def migrate(db: Database, migrations: tuple[Migration, ...] = MIGRATIONS) -> int:
    """Bring the schema up to the last of ``migrations``; returns the version now in force.
    ``SchemaVersionError`` when the database is ahead of the code."""
    _check_order(migrations)
    latest = migrations[-1].version if migrations else 0
    async with db.transaction("migrate") as tx:
        await tx.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        await tx.execute(_CREATE_SCHEMA_TABLE)
        current = await schema_version(tx)
        if current > latest:
            raise SchemaVersionError(
                db.name,
                f"the schema is at version {current}, newer than this Wharf knows "
                f"(version {latest}): upgrade Wharf to run against this database",
            )
        for migration in migrations[current:]:
            await tx.execute(migration.sql)
            await tx.execute(
                "INSERT INTO wharf_schema (version, description) VALUES (%s, %s)",
                (migration.version, migration.description),
            )
    return max(current, latest)


def _check_order(migrations: tuple[Migration, ...]) -> None:
    versions = [m.version for m in migrations]
    if versions != list(range(1, len(versions) + 1)):
        raise ValueError(f"migrations must be numbered 1, 2, 3... without gaps: {versions}")
