"""Consumer groups in the catalogue database: who coordinates each group, its committed offsets,
and its last completed generation (the ``stream_groups`` and ``stream_committed_offsets`` tables
of migration 2).

How it works. A group's row names its coordinator: a node id and the epoch of that node's
registration. :func:`claim_group` makes the calling node the coordinator, in one transaction
that first share-locks the caller's own lease (:func:`~wharf.cluster.catalog.check_lease`). The
claim succeeds when there is no row yet (it is inserted; of two nodes inserting at once, the
second waits on the unique key and then finds the first's row), when the row names nobody (its
coordinator released it), when it names this node (this epoch, or an older registration of the
same id, which the new epoch replaced), or when the node it names is dead. "Dead" is decided as
``nodes.py`` prescribes for every takeover: the holder's ``nodes`` row is locked ``FOR UPDATE``
and found missing, carrying another epoch, or expired by the database's clock. A live holder
is first recognised without that lock, so a claim of a live node's group does not hold up the
holder's fenced writes. The group row is then locked ``FOR UPDATE`` and must still name the
holder that was judged (otherwise someone else took it meanwhile and the claim starts again).

Writes on a group's authority (:func:`commit_offsets`, :func:`store_group`,
:func:`delete_offsets`, :func:`delete_group`) each run in one transaction that share-locks the
node's lease, then share-locks the group row and checks that it still names this node and epoch
(:class:`GroupMovedError` otherwise: nothing is written). Lock order is the same everywhere:
``nodes`` rows, then the group row; so a commit by a coordinator whose lease is running out
either commits before a successor's claim reads its ``nodes`` row, or finds the lease gone.

Offsets are keyed by ``topic_id``: names are resolved among live topics (``deleted_at IS
NULL``) when offsets are written and read, so a topic deleted and created again under the same
name starts without committed offsets. Commit times are the database's clock.

The last completed generation (generation, protocol, leader, state and the coordinator's
membership with each member's assignment, opaque JSON here) is written by :func:`store_group`
when a rebalance completes, and returned by :func:`claim_group` so that a successor carries the
group on in its generation.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from wharf.cluster.catalog import NodeLease, check_lease
from wharf.cluster.database import Database, DatabaseError, Transaction

__all__ = [
    "ClaimStatus",
    "CommitStatus",
    "CommittedOffset",
    "GroupClaim",
    "GroupMovedError",
    "NewOffset",
    "StoredGroup",
    "claim_group",
    "commit_offsets",
    "delete_group",
    "delete_offsets",
    "fetch_offsets",
    "list_groups",
    "release_group",
    "store_group",
]

_RETRIES = 5


class GroupMovedError(DatabaseError):
    """The group's row no longer names this node and epoch as its coordinator: nothing was
    written, and this node must stop coordinating the group."""


class ClaimStatus(enum.Enum):
    CLAIMED = "claimed"
    HELD_ELSEWHERE = "held elsewhere"


class CommitStatus(enum.Enum):
    COMMITTED = "committed"
    UNKNOWN_PARTITION = "unknown topic or partition"


class NewOffset(NamedTuple):
    """One partition's offset as a consumer commits it."""

    offset: int
    leader_epoch: int = -1
    metadata: str = ""


@dataclass(frozen=True)
class CommittedOffset:
    offset: int
    leader_epoch: int
    metadata: str
    committed_at_ms: int


@dataclass(frozen=True)
class StoredGroup:
    """A group's last completed generation, as its coordinator last wrote it."""

    generation: int = 0
    protocol_type: str | None = None
    protocol: str | None = None
    leader: str | None = None
    state: str = "Empty"
    assignment: dict[str, Any] = field(default_factory=dict)
    """Opaque to this module: the coordinator's members and their assignments."""


@dataclass(frozen=True)
class GroupClaim:
    status: ClaimStatus
    holder: str | None = None
    """The live node that holds the group (``HELD_ELSEWHERE``)."""
    group: StoredGroup | None = None
    """The stored generation (``CLAIMED``)."""
    offsets: dict[tuple[str, int], CommittedOffset] = field(default_factory=dict)
    """The group's committed offsets, read after the claim (``CLAIMED``)."""


# -- claiming ------------------------------------------------------------------------------------


async def claim_group(db: Database, lease: NodeLease, group_id: str) -> GroupClaim:
    """Become ``group_id``'s coordinator if no other live node is (see the module docstring);
    ``LeaseLostError`` when the caller's own lease is gone."""

    async def body(tx: Transaction) -> GroupClaim:
        await check_lease(tx, lease, db.name)
        inserted = await tx.fetchval(
            "INSERT INTO stream_groups (group_id, coordinator_node, coordinator_epoch, state)"
            " VALUES (%s, %s, %s, 'Empty') ON CONFLICT (group_id) DO NOTHING RETURNING 1",
            (group_id, lease.node_id, lease.epoch),
        )
        if inserted is None:
            row = await tx.fetchone(
                "SELECT coordinator_node, coordinator_epoch FROM stream_groups"
                " WHERE group_id = %s",
                (group_id,),
            )
            if row is None:
                raise DatabaseError(
                    db.name, f"group {group_id!r} deleted meanwhile", retriable=True
                )
            holder, holder_epoch = row
            if not await _holder_gone(tx, lease, holder, holder_epoch):
                return GroupClaim(ClaimStatus.HELD_ELSEWHERE, holder=holder)
            locked = await tx.fetchone(
                "SELECT coordinator_node, coordinator_epoch FROM stream_groups"
                " WHERE group_id = %s FOR UPDATE",
                (group_id,),
            )
            if locked is None or tuple(locked) != (holder, holder_epoch):
                raise DatabaseError(db.name, f"group {group_id!r} moved meanwhile", retriable=True)
            await tx.execute(
                "UPDATE stream_groups SET coordinator_node = %s, coordinator_epoch = %s"
                " WHERE group_id = %s",
                (lease.node_id, lease.epoch, group_id),
            )
        stored = await tx.fetchone(
            "SELECT generation, protocol_type, protocol, leader, state, assignment"
            "  FROM stream_groups WHERE group_id = %s",
            (group_id,),
        )
        assert stored is not None
        return GroupClaim(
            ClaimStatus.CLAIMED,
            group=StoredGroup(int(stored[0]), *stored[1:6]),
            offsets=await _read_offsets(tx, group_id),
        )

    return await db.run(body, "groups.claim", retries=_RETRIES)


async def _holder_gone(
    tx: Transaction, lease: NodeLease, holder: str | None, holder_epoch: int | None
) -> bool:
    """Whether the coordinator named on a group's row no longer holds it: nobody, this node
    (this or an older registration), a node whose lease ended, or one with no database session
    left (killed: its connections closed; its row locked to decide). Taking a group from a node
    whose lease still runs is safe: every write it makes on the group checks, in the same
    transaction, that the group's row still names it."""
    if holder is None or holder == lease.node_id:
        return True
    query = (
        "SELECT epoch = %s AND lease_expires_at > clock_timestamp()"
        "       AND EXISTS (SELECT 1 FROM pg_stat_activity"
        "                    WHERE application_name = left('wharf ' || id, 63))"
        "  FROM nodes WHERE id = %s"
    )
    live = await tx.fetchval(query, (holder_epoch, holder))
    if live:
        return False  # a live holder: no lock needed to say so
    live = await tx.fetchval(query + " FOR UPDATE", (holder_epoch, holder))
    return not live


async def release_group(db: Database, lease: NodeLease, group_id: str) -> bool:
    """Stop coordinating ``group_id`` so that another live node may claim it at once; returns
    whether this registration still held it."""
    async with db.transaction("groups.release") as tx:
        released = await tx.execute(
            "UPDATE stream_groups SET coordinator_node = NULL, coordinator_epoch = NULL"
            " WHERE group_id = %s AND coordinator_node = %s AND coordinator_epoch = %s",
            (group_id, lease.node_id, lease.epoch),
        )
    return released > 0


async def _check_holder(tx: Transaction, db: Database, lease: NodeLease, group_id: str) -> None:
    """Rule 5 for a group: the node's lease, then the group row naming it (both share-locked
    until ``tx`` ends); ``LeaseLostError`` or :class:`GroupMovedError` otherwise."""
    await check_lease(tx, lease, db.name)
    row = await tx.fetchone(
        "SELECT coordinator_node, coordinator_epoch FROM stream_groups"
        " WHERE group_id = %s FOR SHARE",
        (group_id,),
    )
    if row is None or tuple(row) != (lease.node_id, lease.epoch):
        holder = "nobody" if row is None or row[0] is None else f"{row[0]} (epoch {row[1]})"
        raise GroupMovedError(
            db.name,
            f"group {group_id!r} is coordinated by {holder}, not by {lease.node_id} "
            f"(epoch {lease.epoch})",
        )


# -- the last completed generation ---------------------------------------------------------------


async def store_group(db: Database, lease: NodeLease, group_id: str, group: StoredGroup) -> None:
    """Write the group's last completed generation (fenced: the caller coordinates it)."""

    async def body(tx: Transaction) -> None:
        await _check_holder(tx, db, lease, group_id)
        await tx.execute(
            "UPDATE stream_groups SET generation = %s, protocol_type = %s, protocol = %s,"
            "   leader = %s, state = %s, assignment = %s::jsonb WHERE group_id = %s",
            (
                group.generation,
                group.protocol_type,
                group.protocol,
                group.leader,
                group.state,
                json.dumps(group.assignment),
                group_id,
            ),
        )

    await db.run(body, "groups.store", retries=_RETRIES)


# -- committed offsets ---------------------------------------------------------------------------


async def commit_offsets(
    db: Database,
    lease: NodeLease,
    group_id: str,
    offsets: Mapping[tuple[str, int], NewOffset],
) -> tuple[dict[tuple[str, int], CommitStatus], int]:
    """One OffsetCommit: store ``{(topic name, partition): offset}`` in one fenced transaction.
    Returns a status per partition (a topic that is not live, or a partition beyond its count,
    is not stored) and the commit time (ms, the database's clock)."""
    names = sorted({name for name, _ in offsets})

    async def body(tx: Transaction) -> tuple[dict[tuple[str, int], CommitStatus], int]:
        await _check_holder(tx, db, lease, group_id)
        topics = await _live_topics(tx, names)
        statuses: dict[tuple[str, int], CommitStatus] = {}
        rows: list[tuple[uuid.UUID, int, NewOffset]] = []
        for (name, partition), entry in offsets.items():
            topic = topics.get(name)
            if topic is None or not 0 <= partition < topic[1]:
                statuses[(name, partition)] = CommitStatus.UNKNOWN_PARTITION
            else:
                statuses[(name, partition)] = CommitStatus.COMMITTED
                rows.append((topic[0], partition, entry))
        now_ms = int(
            await tx.fetchval("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")
        )
        if rows:
            await tx.execute(
                "INSERT INTO stream_committed_offsets (group_id, topic_id, partition,"
                "   committed_offset, leader_epoch, metadata, committed_at)"
                " SELECT %s, t, p, o, e, m, to_timestamp(%s / 1000.0)"
                "   FROM unnest(%s::uuid[], %s::integer[], %s::bigint[], %s::integer[],"
                "               %s::text[]) AS u(t, p, o, e, m)"
                " ON CONFLICT (group_id, topic_id, partition) DO UPDATE SET"
                "   committed_offset = EXCLUDED.committed_offset,"
                "   leader_epoch = EXCLUDED.leader_epoch, metadata = EXCLUDED.metadata,"
                "   committed_at = EXCLUDED.committed_at",
                (
                    group_id,
                    now_ms,
                    [r[0] for r in rows],
                    [r[1] for r in rows],
                    [r[2].offset for r in rows],
                    [r[2].leader_epoch for r in rows],
                    [r[2].metadata for r in rows],
                ),
            )
        return statuses, now_ms

    return await db.run(body, "groups.commit_offsets", retries=_RETRIES)


async def fetch_offsets(db: Database, group_id: str) -> dict[tuple[str, int], CommittedOffset]:
    """The group's committed offsets on live topics, by (topic name, partition)."""
    async with db.transaction("groups.fetch_offsets") as tx:
        return await _read_offsets(tx, group_id)


async def delete_offsets(
    db: Database, lease: NodeLease, group_id: str, partitions: Iterable[tuple[str, int]]
) -> None:
    """OffsetDelete (and offset expiry): forget these partitions' offsets (fenced)."""
    wanted = sorted(set(partitions))
    if not wanted:
        return

    async def body(tx: Transaction) -> None:
        await _check_holder(tx, db, lease, group_id)
        await tx.execute(
            "DELETE FROM stream_committed_offsets c USING stream_topics t,"
            "   unnest(%s::text[], %s::integer[]) AS u(name, partition)"
            " WHERE c.group_id = %s AND t.deleted_at IS NULL AND t.name = u.name"
            "   AND c.topic_id = t.topic_id AND c.partition = u.partition",
            ([name for name, _ in wanted], [p for _, p in wanted], group_id),
        )

    await db.run(body, "groups.delete_offsets", retries=_RETRIES)


async def delete_group(db: Database, lease: NodeLease, group_id: str) -> None:
    """DeleteGroups: the group's row and every committed offset of it (fenced: the caller
    coordinates it; a later claim starts the group afresh)."""

    async def body(tx: Transaction) -> None:
        await _check_holder(tx, db, lease, group_id)
        await tx.execute("DELETE FROM stream_committed_offsets WHERE group_id = %s", (group_id,))
        await tx.execute("DELETE FROM stream_groups WHERE group_id = %s", (group_id,))

    await db.run(body, "groups.delete_group", retries=_RETRIES)


async def list_groups(db: Database) -> list[str]:
    """Every group the cluster knows (a row, or committed offsets), by id."""
    async with db.transaction("groups.list") as tx:
        rows = await tx.fetchall(
            "SELECT group_id FROM stream_groups"
            " UNION SELECT DISTINCT group_id FROM stream_committed_offsets ORDER BY 1"
        )
    return [str(r[0]) for r in rows]


async def _live_topics(tx: Transaction, names: list[str]) -> dict[str, tuple[uuid.UUID, int]]:
    rows = await tx.fetchall(
        "SELECT name, topic_id, partitions FROM stream_topics"
        " WHERE deleted_at IS NULL AND name = ANY(%s)",
        (names,),
    )
    return {str(r[0]): (r[1], int(r[2])) for r in rows}


async def _read_offsets(tx: Transaction, group_id: str) -> dict[tuple[str, int], CommittedOffset]:
    rows = await tx.fetchall(
        "SELECT t.name, c.partition, c.committed_offset, c.leader_epoch, c.metadata,"
        "       (extract(epoch FROM c.committed_at) * 1000)::bigint"
        "  FROM stream_committed_offsets c JOIN stream_topics t USING (topic_id)"
        " WHERE c.group_id = %s AND t.deleted_at IS NULL",
        (group_id,),
    )
    return {
        (str(name), int(partition)): CommittedOffset(int(offset), int(epoch), str(meta), int(ms))
        for name, partition, offset, epoch, meta, ms in rows
    }
