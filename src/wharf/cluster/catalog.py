"""The cluster-wide topic catalogue and producer ids, in the streams tables of migration 2.

How it works: a topic is a ``stream_topics`` row (a stable ``topic_id`` UUID, its name, its
partition count and its config overrides) and one ``stream_partitions`` row per partition, which
holds the partition's log start and next offset (docs/cluster.md, "The streams commit path").
Every change is one transaction that first checks and share-locks the caller's node lease
(:func:`check_lease`, rule 5: the pattern in :mod:`wharf.cluster.nodes`), so a node whose lease
expired or was replaced changes nothing; it gets :class:`LeaseLostError` and must register again.

Names are unique among live topics by two partial unique indexes: the name itself, and the name
with ``.`` read as ``_`` (Kafka's metric-name collision rule). ``INSERT ... ON CONFLICT DO
NOTHING`` lets the database decide between concurrent creators, on any node: exactly one row
goes in, and the others learn which index refused them. Deleting a topic stamps ``deleted_at``:
the row keeps its id (so index rows and committed offsets that name it stay unambiguous), and a
new topic of the same name gets a new id. A topic's row is locked ``FOR UPDATE`` while its
partitions or configs change, so those changes are serial per topic.

Every change sends ``pg_notify('wharf_catalog', <topic name>)`` inside its transaction, so the
nodes' catalogue caches hear of it once it commits (and never of a change that rolled back).

Config overrides are stored as given (name -> value strings); checking them against the known
topic configs is the caller's work, as the single-node catalogue's is. Producer ids come from the
sequence ``stream_producer_id_seq``: unique across nodes, never reused, never rolled back.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, LiteralString

from wharf.cluster.database import Database, DatabaseError, Transaction
from wharf.cluster.nodes import LeaseLostError, Membership
from wharf.errors import AlreadyExistsError, InvalidArgumentError, NotFoundError

__all__ = [
    "CHANNEL",
    "LEASE_CHECK",
    "MAX_PARTITIONS",
    "NodeLease",
    "PartitionInfo",
    "TopicInfo",
    "allocate_producer_id",
    "alter_configs",
    "check_lease",
    "create_partitions",
    "create_topic",
    "delete_topic",
    "describe_topic",
    "list_topics",
    "require_lease",
]

CHANNEL = "wharf_catalog"
"""The channel every catalogue change is announced on, with the topic's name as payload."""
MAX_NAME_LENGTH = 249
MAX_PARTITIONS = 10_000
_NAME = re.compile(r"[a-zA-Z0-9._-]+")
_RETRIES = 5


@dataclass(frozen=True)
class NodeLease:
    """The fencing token of a node's registration: its id and epoch (see ``nodes.py``)."""

    node_id: str
    epoch: int

    @classmethod
    def of(cls, membership: Membership) -> NodeLease:
        """The membership's current lease; ``LeaseLostError`` when it holds none."""
        if membership.epoch is None:
            raise LeaseLostError(
                membership.db.name, f"node {membership.node_id} holds no lease"
            )
        return cls(membership.node_id, membership.epoch)


@dataclass(frozen=True)
class PartitionInfo:
    partition: int
    log_start_offset: int
    next_offset: int
    bytes: int


@dataclass(frozen=True)
class TopicInfo:
    topic_id: uuid.UUID
    name: str
    configs: dict[str, str]
    created_at: datetime
    partitions: list[PartitionInfo]


LEASE_CHECK: LiteralString = (
    "SELECT 1 FROM nodes WHERE id = %s AND epoch = %s AND lease_expires_at > clock_timestamp()"
    " FOR KEY SHARE"
)
"""One row while the lease (node id, epoch) is live: see :func:`check_lease`."""


async def check_lease(tx: Transaction, lease: NodeLease, database: str) -> None:
    """Rule 5: the lease is live by the database's clock, and stays so until ``tx`` ends
    (key-share lock on the node's row: see :mod:`wharf.cluster.nodes`); ``LeaseLostError``
    otherwise."""
    require_lease(await tx.fetchall(LEASE_CHECK, (lease.node_id, lease.epoch)), lease, database)


def require_lease(rows: Sequence[object], lease: NodeLease, database: str) -> None:
    """``LeaseLostError`` unless :data:`LEASE_CHECK` found the lease (``rows``: its rows,
    when it ran among other statements)."""
    if not rows:
        raise LeaseLostError(
            database,
            f"node {lease.node_id}: the lease of epoch {lease.epoch} expired or was replaced",
        )


def _validate_name(name: str) -> None:
    if not name or name in (".", ".."):
        raise InvalidArgumentError(f"illegal topic name {name!r}")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgumentError(f"topic name is longer than {MAX_NAME_LENGTH} characters")
    if not _NAME.fullmatch(name):
        raise InvalidArgumentError(
            f"topic name {name!r} may only contain ASCII letters, digits, '.', '_' and '-'"
        )


def _validate_count(count: int) -> None:
    if not 1 <= count <= MAX_PARTITIONS:
        raise InvalidArgumentError(
            f"partitions must be between 1 and {MAX_PARTITIONS}, not {count}"
        )


async def _locked_topic(tx: Transaction, name: str) -> tuple[uuid.UUID, int, dict[str, str]]:
    """The live topic's id, partition count and configs, its row locked ``FOR UPDATE``."""
    row = await tx.fetchone(
        "SELECT topic_id, partitions, configs FROM stream_topics"
        " WHERE name = %s AND deleted_at IS NULL FOR UPDATE",
        (name,),
    )
    if row is None:
        raise NotFoundError(f"no topic {name!r}")
    return row[0], int(row[1]), dict(row[2])


async def _notify(tx: Transaction, name: str) -> None:
    """Tell every node's catalogue cache that ``name`` changed; PostgreSQL delivers it when,
    and only if, ``tx`` commits."""
    await tx.execute("SELECT pg_notify(%s, %s)", (CHANNEL, name))


async def _add_partitions(tx: Transaction, topic_id: uuid.UUID, indexes: range) -> None:
    await tx.execute(
        "INSERT INTO stream_partitions (topic_id, partition)"
        " SELECT %s, generate_series(%s::integer, %s::integer)",
        (topic_id, indexes.start, indexes.stop - 1),
    )


async def create_topic(
    db: Database,
    lease: NodeLease,
    name: str,
    partitions: int,
    configs: Mapping[str, str] | None = None,
) -> TopicInfo:
    """Create a topic with ``partitions`` empty partitions. ``AlreadyExistsError`` when a live
    topic has that name, ``InvalidArgumentError`` for an illegal name or count or a name that
    collides with another's ('.' and '_' are the same)."""
    _validate_name(name)
    _validate_count(partitions)
    overrides = dict(configs or {})

    async def body(tx: Transaction) -> TopicInfo:
        await check_lease(tx, lease, db.name)
        row = await tx.fetchone(
            "INSERT INTO stream_topics (topic_id, name, partitions, configs, created_at)"
            " VALUES (%s, %s, %s, %s::jsonb, clock_timestamp())"
            " ON CONFLICT DO NOTHING RETURNING topic_id, created_at",
            (uuid.uuid4(), name, partitions, json.dumps(overrides)),
        )
        if row is None:
            existing = await tx.fetchval(
                "SELECT name FROM stream_topics"
                " WHERE replace(name, '.', '_') = replace(%s, '.', '_') AND deleted_at IS NULL",
                (name,),
            )
            if existing is None:
                # the row in the way was deleted since: nothing written, try again
                raise DatabaseError(db.name, f"topic {name!r} changed meanwhile", retriable=True)
            if existing == name:
                raise AlreadyExistsError(f"topic {name!r} already exists")
            raise InvalidArgumentError(
                f"topic {name!r} collides with {existing!r} ('.' and '_' are the same)"
            )
        topic_id, created_at = row
        await _add_partitions(tx, topic_id, range(partitions))
        await _notify(tx, name)
        return TopicInfo(
            topic_id,
            name,
            overrides,
            created_at,
            [PartitionInfo(i, 0, 0, 0) for i in range(partitions)],
        )

    return await db.run(body, "catalog.create_topic", retries=_RETRIES)


async def delete_topic(db: Database, lease: NodeLease, name: str) -> uuid.UUID:
    """Mark the live topic ``name`` deleted; returns its id. ``NotFoundError`` without one."""

    async def body(tx: Transaction) -> uuid.UUID:
        await check_lease(tx, lease, db.name)
        topic_id, _, _ = await _locked_topic(tx, name)
        await tx.execute(
            "UPDATE stream_topics SET deleted_at = clock_timestamp() WHERE topic_id = %s",
            (topic_id,),
        )
        await _notify(tx, name)
        return topic_id

    return await db.run(body, "catalog.delete_topic", retries=_RETRIES)


async def create_partitions(db: Database, lease: NodeLease, name: str, total: int) -> TopicInfo:
    """Grow ``name`` to ``total`` partitions (CreatePartitions: the new total, which must be
    larger than the current count: partitions are never removed)."""

    async def body(tx: Transaction) -> None:
        await check_lease(tx, lease, db.name)
        topic_id, current, _ = await _locked_topic(tx, name)
        if total <= current:
            raise InvalidArgumentError(
                f"topic {name!r} has {current} partitions; the new count must be larger, "
                f"not {total}"
            )
        _validate_count(total)
        await tx.execute(
            "UPDATE stream_topics SET partitions = %s WHERE topic_id = %s", (total, topic_id)
        )
        await _add_partitions(tx, topic_id, range(current, total))
        await _notify(tx, name)

    await db.run(body, "catalog.create_partitions", retries=_RETRIES)
    return await describe_topic(db, name)


async def alter_configs(
    db: Database,
    lease: NodeLease,
    name: str,
    set_configs: Mapping[str, str] | None = None,
    delete: Iterable[str] = (),
    *,
    replace: bool = False,
) -> dict[str, str]:
    """Change a topic's config overrides and return them: ``replace`` makes ``set_configs`` the
    whole set (AlterConfigs), otherwise these are set and those deleted (IncrementalAlterConfigs).
    """
    removed = list(delete)

    async def body(tx: Transaction) -> dict[str, str]:
        await check_lease(tx, lease, db.name)
        topic_id, _, current = await _locked_topic(tx, name)
        overrides = {} if replace else current
        for key in removed:
            overrides.pop(key, None)
        overrides.update(set_configs or {})
        await tx.execute(
            "UPDATE stream_topics SET configs = %s::jsonb WHERE topic_id = %s",
            (json.dumps(overrides), topic_id),
        )
        await _notify(tx, name)
        return overrides

    return await db.run(body, "catalog.alter_configs", retries=_RETRIES)


async def describe_topic(db: Database, name: str) -> TopicInfo:
    """The live topic ``name`` with each partition's offsets; ``NotFoundError`` without one."""
    topics = await _read_topics(db, name)
    if not topics:
        raise NotFoundError(f"no topic {name!r}")
    return topics[0]


async def list_topics(db: Database) -> list[TopicInfo]:
    """Every live topic, by name, with each partition's offsets."""
    return await _read_topics(db, None)


async def _read_topics(db: Database, name: str | None) -> list[TopicInfo]:
    # one snapshot, so that a topic's partitions agree with its row
    async with db.transaction("catalog.read_topics", isolation="repeatable read") as tx:
        topics = await tx.fetchall(
            "SELECT topic_id, name, configs, created_at FROM stream_topics"
            " WHERE deleted_at IS NULL AND (%s::text IS NULL OR name = %s) ORDER BY name",
            (name, name),
        )
        partitions = await tx.fetchall(
            "SELECT p.topic_id, p.partition, p.log_start_offset, p.next_offset, p.bytes"
            "  FROM stream_partitions p JOIN stream_topics t USING (topic_id)"
            " WHERE t.deleted_at IS NULL AND (%s::text IS NULL OR t.name = %s)"
            " ORDER BY p.topic_id, p.partition",
            (name, name),
        )
    by_topic: dict[uuid.UUID, list[PartitionInfo]] = {}
    for topic_id, index, log_start, next_offset, size in partitions:
        by_topic.setdefault(topic_id, []).append(
            PartitionInfo(int(index), int(log_start), int(next_offset), int(size))
        )
    return [_topic(row, by_topic.get(row[0], [])) for row in topics]


def _topic(row: tuple[Any, ...], partitions: list[PartitionInfo]) -> TopicInfo:
    topic_id, name, configs, created_at = row
    return TopicInfo(
        topic_id, name, {str(k): str(v) for k, v in configs.items()}, created_at, partitions
    )


async def allocate_producer_id(db: Database, lease: NodeLease) -> int:
    """A producer id no other call on any node ever gets (InitProducerId)."""

    async def body(tx: Transaction) -> int:
        await check_lease(tx, lease, db.name)
        return int(await tx.fetchval("SELECT nextval('stream_producer_id_seq')"))

    return await db.run(body, "catalog.allocate_producer_id", retries=_RETRIES)
