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
    Migration(
        2,
        "streams: topics, partitions, objects, the batch index, producers, groups, leases",
        """
        CREATE TABLE stream_topics (
            topic_id   uuid        PRIMARY KEY,
            name       text        NOT NULL,
            partitions integer     NOT NULL CHECK (partitions > 0),
            configs    jsonb       NOT NULL DEFAULT '{}',
            created_at timestamptz NOT NULL,
            deleted_at timestamptz
        );
        CREATE UNIQUE INDEX stream_topics_name ON stream_topics (name)
            WHERE deleted_at IS NULL;
        CREATE UNIQUE INDEX stream_topics_collision ON stream_topics (replace(name, '.', '_'))
            WHERE deleted_at IS NULL;

        CREATE TABLE stream_partitions (
            topic_id         uuid    NOT NULL REFERENCES stream_topics,
            partition        integer NOT NULL CHECK (partition >= 0),
            next_offset      bigint  NOT NULL DEFAULT 0,
            log_start_offset bigint  NOT NULL DEFAULT 0,
            bytes            bigint  NOT NULL DEFAULT 0,
            PRIMARY KEY (topic_id, partition),
            CHECK (0 <= log_start_offset AND log_start_offset <= next_offset)
        );

        CREATE TABLE stream_objects (
            key                text        PRIMARY KEY,
            kind               text        NOT NULL CHECK (kind IN ('intake', 'partition')),
            flush_id           uuid        UNIQUE,
            size               bigint      NOT NULL,
            node_id            text,
            node_epoch         bigint,
            created_at         timestamptz NOT NULL,
            refs               integer     NOT NULL DEFAULT 0 CHECK (refs >= 0),
            unreferenced_since timestamptz,
            state              text        NOT NULL CHECK (state IN ('live', 'deleting')),
            deleting_since     timestamptz
        );
        CREATE INDEX stream_objects_unreferenced ON stream_objects (state, unreferenced_since);

        CREATE TABLE stream_batches (
            topic_id        uuid     NOT NULL,
            partition       integer  NOT NULL,
            base_offset     bigint   NOT NULL,
            last_offset     bigint   NOT NULL,
            object_key      text     NOT NULL,
            byte_start      bigint   NOT NULL,
            byte_length     integer  NOT NULL,
            record_count    integer  NOT NULL,
            first_timestamp bigint   NOT NULL,
            max_timestamp   bigint   NOT NULL,
            producer_id     bigint   NOT NULL,
            producer_epoch  smallint NOT NULL,
            base_sequence   integer  NOT NULL,
            attributes      smallint NOT NULL,
            PRIMARY KEY (topic_id, partition, base_offset),
            CHECK (last_offset >= base_offset)
        );
        CREATE INDEX stream_batches_last_offset
            ON stream_batches (topic_id, partition, last_offset);
        CREATE INDEX stream_batches_object ON stream_batches (object_key);

        CREATE TABLE stream_producers (
            producer_id    bigint      NOT NULL,
            topic_id       uuid        NOT NULL,
            partition      integer     NOT NULL,
            producer_epoch smallint    NOT NULL,
            last_sequence  integer     NOT NULL,
            recent         jsonb       NOT NULL DEFAULT '[]',
            updated_at     timestamptz NOT NULL,
            PRIMARY KEY (producer_id, topic_id, partition)
        );
        CREATE SEQUENCE stream_producer_id_seq AS bigint MINVALUE 0 START WITH 0;

        CREATE TABLE stream_groups (
            group_id          text    PRIMARY KEY,
            coordinator_node  text,
            coordinator_epoch bigint,
            generation        integer NOT NULL DEFAULT 0,
            protocol_type     text,
            protocol          text,
            leader            text,
            state             text    NOT NULL,
            assignment        jsonb   NOT NULL DEFAULT '{}'
        );

        CREATE TABLE stream_committed_offsets (
            group_id         text        NOT NULL,
            topic_id         uuid        NOT NULL,
            partition        integer     NOT NULL,
            committed_offset bigint      NOT NULL,
            leader_epoch     integer     NOT NULL DEFAULT -1,
            metadata         text        NOT NULL DEFAULT '',
            committed_at     timestamptz NOT NULL,
            PRIMARY KEY (group_id, topic_id, partition)
        );

        CREATE TABLE stream_leases (
            name        text        PRIMARY KEY
                CHECK (name IN ('compactor', 'retention', 'gc', 'orphans')),
            node_id     text        NOT NULL,
            node_epoch  bigint      NOT NULL,
            acquired_at timestamptz NOT NULL
        );
        """,
    ),
    Migration(
        3,
        "cluster: Kafka broker ids of node ids, and the cluster's id",
        """
        CREATE TABLE cluster_broker_ids (
            node_id   text PRIMARY KEY,
            broker_id integer GENERATED BY DEFAULT AS IDENTITY UNIQUE
        );

        CREATE TABLE cluster_info (
            singleton  boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
            cluster_id text        NOT NULL,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        -- Kafka's shape of cluster id: a random UUID in URL-safe base64, unpadded (22 chars)
        INSERT INTO cluster_info (cluster_id) VALUES (translate(rtrim(encode(
            decode(replace(gen_random_uuid()::text, '-', ''), 'hex'), 'base64'), '='), '+/', '-_'));
        """,
    ),
    Migration(
        4,
        "queues: AMQP definitions, users and messages, claimed by node epochs",
        """
        CREATE TABLE amqp_vhosts (
            name text PRIMARY KEY
        );
        INSERT INTO amqp_vhosts (name) VALUES ('/');

        CREATE TABLE amqp_exchanges (
            vhost       text    NOT NULL REFERENCES amqp_vhosts ON DELETE CASCADE,
            name        text    NOT NULL,
            type        text    NOT NULL,
            durable     boolean NOT NULL,
            auto_delete boolean NOT NULL,
            internal    boolean NOT NULL,
            arguments   text    NOT NULL,
            PRIMARY KEY (vhost, name)
        );

        CREATE TABLE amqp_queues (
            id               bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            vhost            text    NOT NULL REFERENCES amqp_vhosts ON DELETE CASCADE,
            name             text    NOT NULL,
            durable          boolean NOT NULL,
            auto_delete      boolean NOT NULL,
            arguments        text    NOT NULL,
            owner_node       text,
            owner_epoch      bigint,
            owner_connection text,
            delivery_limit   integer,
            max_length       bigint,
            max_length_bytes bigint,
            UNIQUE (vhost, name)
        );
        CREATE INDEX amqp_queues_owner ON amqp_queues (owner_epoch)
            WHERE owner_epoch IS NOT NULL;

        CREATE TABLE amqp_bindings (
            vhost       text NOT NULL REFERENCES amqp_vhosts ON DELETE CASCADE,
            source      text NOT NULL,
            kind        text NOT NULL CHECK (kind IN ('queue', 'exchange')),
            destination text NOT NULL,
            routing_key text NOT NULL,
            arguments   text NOT NULL,
            PRIMARY KEY (vhost, source, kind, destination, routing_key, arguments)
        );

        CREATE TABLE amqp_messages (
            seq            bigint   GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            queue_id       bigint   NOT NULL,
            priority       smallint NOT NULL,
            expires_at     bigint,
            delivery_count integer  NOT NULL DEFAULT 0,
            claimed_node   text,
            claimed_epoch  bigint,
            claim_token    bigint,
            exchange       text     NOT NULL,
            routing_key    text     NOT NULL,
            properties     bytea    NOT NULL,
            body           bytea    NOT NULL
        );
        CREATE INDEX amqp_messages_ready ON amqp_messages (queue_id, priority DESC, seq)
            WHERE claimed_epoch IS NULL;
        CREATE INDEX amqp_messages_claims ON amqp_messages (claimed_epoch)
            WHERE claimed_epoch IS NOT NULL;
        CREATE INDEX amqp_messages_expiry ON amqp_messages (expires_at)
            WHERE expires_at IS NOT NULL;

        -- the users and permissions, as one document (UserStore.to_json)
        CREATE TABLE amqp_users (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            data      jsonb   NOT NULL
        );
        """,
    ),
    Migration(
        5,
        "queues: large bodies in the object store, messages held by delayed exchanges",
        """
        -- a body above the threshold is the object body_key (body is then empty)
        ALTER TABLE amqp_messages ADD COLUMN body_key text, ADD COLUMN body_size bigint;
        CREATE INDEX amqp_messages_body_key ON amqp_messages (body_key)
            WHERE body_key IS NOT NULL;

        -- every body object a publish committed (or the collector claimed): a key is
        -- inserted once, so a publish that commits after its object was claimed fails
        CREATE TABLE amqp_bodies (
            key            text        PRIMARY KEY,
            created_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
            deleting_since timestamptz,
            orphan         boolean     NOT NULL DEFAULT false
        );
        CREATE INDEX amqp_bodies_deleting ON amqp_bodies (deleting_since)
            WHERE deleting_since IS NOT NULL;

        -- messages an x-delayed-message exchange holds until due_at (ms, database clock)
        CREATE TABLE amqp_held (
            seq              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            vhost            text   NOT NULL,
            exchange         text   NOT NULL,
            due_at           bigint NOT NULL,
            message_exchange text   NOT NULL,
            routing_key      text   NOT NULL,
            properties       bytea  NOT NULL,
            body             bytea  NOT NULL,
            body_key         text,
            body_size        bigint,
            FOREIGN KEY (vhost, exchange) REFERENCES amqp_exchanges ON DELETE CASCADE
        );
        CREATE INDEX amqp_held_due ON amqp_held (due_at, seq);
        CREATE INDEX amqp_held_body_key ON amqp_held (body_key) WHERE body_key IS NOT NULL;
        """,
    ),
    Migration(
        6,
        "queues: the cluster's AMQP consumers, and when each queue was last used",
        """
        -- one row per basic.consume, registered by the consumer's node under its epoch;
        -- id is the registration order (single active consumer: the lowest id goes next);
        -- token, the node's random number for it, makes a registration safe to run again
        CREATE TABLE amqp_consumers (
            id         bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            queue_id   bigint  NOT NULL REFERENCES amqp_queues ON DELETE CASCADE,
            node_id    text    NOT NULL,
            node_epoch bigint  NOT NULL,
            tag        text    NOT NULL,
            token      bigint  NOT NULL UNIQUE,
            exclusive  boolean NOT NULL,
            active     boolean NOT NULL DEFAULT false
        );
        CREATE INDEX amqp_consumers_queue ON amqp_consumers (queue_id, id);
        CREATE INDEX amqp_consumers_epoch ON amqp_consumers (node_epoch);
        CREATE UNIQUE INDEX amqp_consumers_one_active ON amqp_consumers (queue_id) WHERE active;

        -- x-single-active-consumer; x-expires (ms), and the last use on the database's clock:
        -- a declare, a basic.get, a consumer coming or the last one going
        ALTER TABLE amqp_queues
            ADD COLUMN single_active boolean NOT NULL DEFAULT false,
            ADD COLUMN expires_ms    bigint,
            ADD COLUMN last_used_at  timestamptz NOT NULL DEFAULT clock_timestamp();
        CREATE INDEX amqp_queues_expires ON amqp_queues (id) WHERE expires_ms IS NOT NULL;
        """,
    ),
    Migration(
        7,
        "queues: claims as in-place (HOT) updates; the epochs that claimed",
        """
        -- A claim sets claimed_node/_epoch/claim_token. While an index covered claimed_epoch
        -- (the ready rows' partial index and the claims index), every claim wrote a new row
        -- version and index entries; now no index covers those columns, so a claim is a HOT
        -- update, in place in its page (room is left in each page for it). A claim skips the
        -- claimed rows at the head of its queue instead (docs/cluster.md, "Consume").
        DROP INDEX amqp_messages_claims;
        DROP INDEX amqp_messages_ready;
        CREATE INDEX amqp_messages_queue ON amqp_messages (queue_id, priority DESC, seq);
        ALTER TABLE amqp_messages SET (fillfactor = 50);

        -- every epoch that has claimed rows (the claim inserts it), so that the sweep finds
        -- the claims of dead epochs without an index on them
        CREATE TABLE amqp_claim_epochs (
            epoch   bigint PRIMARY KEY,
            node_id text   NOT NULL
        );
        INSERT INTO amqp_claim_epochs (epoch, node_id)
            SELECT DISTINCT claimed_epoch, claimed_node FROM amqp_messages
             WHERE claimed_epoch IS NOT NULL;
        """,
    ),
    Migration(
        8,
        "queues: direct replies forwarded to the node of their address",
        """
        -- a reply published on one node to a reply address of another node's channel, until
        -- that node takes it (cluster/queues/replies.py)
        CREATE TABLE amqp_replies (
            seq         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            broker_id   integer     NOT NULL,
            vhost       text        NOT NULL,
            routing_key text        NOT NULL,
            properties  bytea       NOT NULL,
            body        bytea       NOT NULL,
            created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE INDEX amqp_replies_broker ON amqp_replies (broker_id);
        """,
    ),
    Migration(
        9,
        "no vacuum truncation of the tables whose rows come and go",
        """
        -- A vacuum that finds empty pages at the end of a table gives them back to the file
        -- system under an ACCESS EXCLUSIVE lock: every claim, ack, publish and flush of every
        -- node waited for it, 40-250 ms at a time (queue tables are appended at the end and
        -- emptied from the front, so their tails are often empty). The pages are reused for
        -- new rows instead; VACUUM (TRUNCATE true) by hand still shrinks a table.
        ALTER TABLE amqp_messages SET (vacuum_truncate = false);
        ALTER TABLE amqp_bodies SET (vacuum_truncate = false);
        ALTER TABLE amqp_held SET (vacuum_truncate = false);
        ALTER TABLE amqp_replies SET (vacuum_truncate = false);
        ALTER TABLE amqp_consumers SET (vacuum_truncate = false);
        ALTER TABLE stream_batches SET (vacuum_truncate = false);
        ALTER TABLE stream_objects SET (vacuum_truncate = false);
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
