"""The consumers of the cluster's AMQP queues: one ``amqp_consumers`` row per basic.consume.

How it works (docs/cluster.md, "Queues (AMQP) in a cluster"): a node registers each of its
consumers (:func:`register`) under its epoch before answering consume-ok, and removes it
(:func:`deregister`) when it is cancelled or its channel or connection closes; the consumers of
a dead epoch are removed by the sweep (:func:`sweep_consumers`, called from
:func:`~wharf.cluster.queues.messages.sweep`). Every write checks the node's lease in its own
transaction, and every transaction that adds or removes consumers of a queue first locks that
queue's row (``FOR NO KEY UPDATE``, or an ``UPDATE`` of ``last_used_at``: publishes' ``FOR KEY
SHARE`` does not wait for it), so the decisions below see every consumer of the queue:

* **exclusive consumers**: a registration is refused while a live consumer of the queue is
  exclusive, or when it asks to be exclusive and any live consumer exists;
* **single active consumer** (``single_active`` queues): the first registered consumer is made
  ``active`` (one per queue, a unique partial index); when it goes, the live consumer with the
  lowest id (registration order) is made active in the same transaction and its queue id is
  sent on :data:`CHANNEL`, so its node starts serving it;
* **auto-delete**: when a queue's last consumer goes (by deregistration or the sweep), an
  ``auto_delete`` queue is deleted in the same transaction (it had one: the one that went);
* **x-expires**: ``last_used_at`` is set on the database's clock by a declare
  (:func:`counts`), a basic.get (:func:`touch`), a registration and the last consumer's
  departure; the sweep deletes the queues with ``expires_ms`` that have no consumer and were
  last used longer ago than that.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from wharf.cluster.catalog import NodeLease, check_lease
from wharf.cluster.database import Database, Transaction
from wharf.cluster.queues.definitions import delete_queues
from wharf.errors import NotFoundError

__all__ = [
    "CHANNEL",
    "Departure",
    "Registration",
    "SweptConsumers",
    "active_consumers",
    "counts",
    "deregister",
    "register",
    "sweep_consumers",
    "touch",
]

CHANNEL = "wharf_amqp_consumers"
"""Queues whose active consumer changed: comma-separated queue ids."""

_RETRIES = 3


@dataclass(frozen=True, slots=True)
class Registration:
    """A registered consumer: its row id and whether it is its queue's active consumer."""

    id: int
    active: bool


@dataclass(frozen=True, slots=True)
class Departure:
    """What removing consumers did: queues whose active consumer changed, queues deleted."""

    promoted: list[int]
    deleted: list[int]


@dataclass(frozen=True, slots=True)
class SweptConsumers:
    """What the sweep did: consumers of dead epochs removed, queues whose active consumer
    changed, auto-delete queues left without consumers and idle x-expires queues deleted."""

    removed: int = 0
    promoted: int = 0
    auto_deleted: int = 0
    expired: int = 0


async def register(
    db: Database, lease: NodeLease, queue_id: int, tag: str, token: int, *,
    exclusive: bool = False,
) -> Registration | None:  # fmt: skip
    """Register a consumer of the queue for ``lease``; None when exclusivity refuses it.
    ``LeaseLostError`` without a live lease, ``NotFoundError`` when the queue is gone.
    ``token`` (random, the caller's) names the registration: run again after a commit of
    unknown outcome, it returns the registration that commit made, if it did."""

    async def body(tx: Transaction) -> Registration | None:
        await check_lease(tx, lease, db.name)
        single_active = await tx.fetchone(
            "UPDATE amqp_queues SET last_used_at = clock_timestamp() WHERE id = %s"
            " RETURNING single_active",
            (queue_id,),
        )
        if single_active is None:
            raise NotFoundError(f"queue {queue_id} was deleted")
        made = await tx.fetchone(
            "SELECT id, active FROM amqp_consumers WHERE token = %s", (token,)
        )
        if made is not None:
            return Registration(int(made[0]), bool(made[1]))
        blocked = await tx.fetchval(
            "SELECT EXISTS (SELECT 1 FROM amqp_consumers c JOIN nodes n ON n.id = c.node_id"
            "                 AND n.epoch = c.node_epoch AND n.lease_expires_at > clock_timestamp()"
            "                WHERE c.queue_id = %s AND (c.exclusive OR %s))",
            (queue_id, exclusive),
        )
        if blocked:
            return None
        row = await tx.fetchone(
            "INSERT INTO amqp_consumers (queue_id, node_id, node_epoch, tag, token, exclusive,"
            "                            active)"
            " SELECT %s, %s, %s, %s, %s, %s, %s AND NOT EXISTS ("
            "        SELECT 1 FROM amqp_consumers WHERE queue_id = %s AND active)"
            " RETURNING id, active",
            (queue_id, lease.node_id, lease.epoch, tag, token, exclusive,
             bool(single_active[0]), queue_id),
        )  # fmt: skip
        assert row is not None
        return Registration(int(row[0]), bool(row[1]))

    return await db.run(body, "amqp.consumer.register", retries=_RETRIES)


async def deregister(db: Database, lease: NodeLease, ids: list[int]) -> Departure:
    """Remove the consumers ``ids`` registered by ``lease`` (those already gone are skipped),
    then promote, delete or mark unused their queues (see the module docstring).
    ``LeaseLostError`` without a live lease: the sweep removes them once the epoch is dead."""

    async def body(tx: Transaction) -> Departure:
        await check_lease(tx, lease, db.name)
        queues = await tx.fetchall(
            "SELECT id FROM amqp_queues WHERE id IN ("
            "       SELECT queue_id FROM amqp_consumers WHERE id = ANY(%s))"
            " ORDER BY id FOR NO KEY UPDATE",
            (ids,),
        )
        await tx.execute(
            "DELETE FROM amqp_consumers WHERE id = ANY(%s) AND node_id = %s AND node_epoch = %s",
            (ids, lease.node_id, lease.epoch),
        )
        return await _after_departures(tx, [int(q[0]) for q in queues])

    return await db.run(body, "amqp.consumer.deregister", retries=_RETRIES)


async def _after_departures(tx: Transaction, queue_ids: list[int]) -> Departure:
    """The queues ``queue_ids`` (locked by the caller) lost consumers: promote the next
    single active consumer, mark the queues left without consumers used now, and delete those
    of them that are auto-delete."""
    if not queue_ids:
        return Departure([], [])
    promoted = await tx.fetchall(
        "UPDATE amqp_consumers SET active = true WHERE id IN ("
        "  SELECT min(c.id) FROM amqp_consumers c JOIN amqp_queues q ON q.id = c.queue_id"
        "    JOIN nodes n ON n.id = c.node_id AND n.epoch = c.node_epoch"
        "     AND n.lease_expires_at > clock_timestamp()"
        "   WHERE c.queue_id = ANY(%s) AND q.single_active"
        "     AND NOT EXISTS (SELECT 1 FROM amqp_consumers a"
        "                      WHERE a.queue_id = c.queue_id AND a.active)"
        "  GROUP BY c.queue_id)"
        " RETURNING queue_id",
        (queue_ids,),
    )
    unused = await tx.fetchall(
        "UPDATE amqp_queues q SET last_used_at = clock_timestamp()"
        " WHERE id = ANY(%s)"
        "   AND NOT EXISTS (SELECT 1 FROM amqp_consumers c WHERE c.queue_id = q.id)"
        " RETURNING id, auto_delete",
        (queue_ids,),
    )
    deleted = sorted(int(r[0]) for r in unused if r[1])
    await delete_queues(tx, deleted)
    promoted_ids = sorted(int(r[0]) for r in promoted)
    if promoted_ids:
        await tx.execute(
            "SELECT pg_notify(%s, %s)", (CHANNEL, ",".join(str(q) for q in promoted_ids))
        )
    return Departure(promoted_ids, deleted)


async def active_consumers(db: Database, queue_ids: list[int]) -> dict[int, int]:
    """The active consumer's id of each of ``queue_ids`` that has one."""
    async with db.transaction("amqp.consumer.active") as tx:
        rows = await tx.fetchall(
            "SELECT queue_id, id FROM amqp_consumers WHERE queue_id = ANY(%s) AND active",
            (queue_ids,),
        )
    return {int(q): int(c) for q, c in rows}


async def counts(db: Database, lease: NodeLease | None, queue_id: int) -> tuple[int, int]:
    """What queue.declare-ok reports: the queue's unclaimed rows, and its consumers registered
    by other nodes or epochs than ``lease`` (all of them without one); marks an x-expires queue
    used if ``lease`` is live (a declare renews it)."""
    node_id, epoch = (None, None) if lease is None else (lease.node_id, lease.epoch)
    async with db.transaction("amqp.queue.counts") as tx:
        await tx.execute(
            "UPDATE amqp_queues SET last_used_at = clock_timestamp()"
            " WHERE id = %s AND expires_ms IS NOT NULL AND EXISTS ("
            "       SELECT 1 FROM nodes WHERE id = %s AND epoch = %s"
            "          AND lease_expires_at > clock_timestamp() FOR KEY SHARE)",
            (queue_id, node_id, epoch),
        )
        row = await tx.fetchone(
            "SELECT (SELECT count(*) FROM amqp_messages"
            "         WHERE queue_id = %s AND claimed_epoch IS NULL),"
            "       (SELECT count(*) FROM amqp_consumers"
            "         WHERE queue_id = %s"
            "           AND (node_id IS DISTINCT FROM %s OR node_epoch IS DISTINCT FROM %s))",
            (queue_id, queue_id, node_id, epoch),
        )
    assert row is not None
    return int(row[0]), int(row[1])


async def touch(db: Database, lease: NodeLease, queue_id: int) -> None:
    """Mark the queue used now (basic.get on an x-expires queue), fenced on ``lease``."""

    async def body(tx: Transaction) -> None:
        await check_lease(tx, lease, db.name)
        await tx.execute(
            "UPDATE amqp_queues SET last_used_at = clock_timestamp() WHERE id = %s", (queue_id,)
        )

    await db.run(body, "amqp.queue.touch", retries=_RETRIES)


async def sweep_consumers(tx: Transaction, t: datetime) -> SweptConsumers:
    """The sweep's part (in its transaction, after it locked the nodes whose lease ended by
    ``t``): remove the consumers of epochs not live at ``t``, then promote, mark unused or
    delete their queues, then delete the x-expires queues unused since longer than that."""
    queues = await tx.fetchall(
        "SELECT id FROM amqp_queues WHERE id IN ("
        "       SELECT c.queue_id FROM amqp_consumers c WHERE NOT EXISTS ("
        "              SELECT 1 FROM nodes n WHERE n.id = c.node_id AND n.epoch = c.node_epoch"
        "                 AND n.lease_expires_at > %s))"
        " ORDER BY id FOR NO KEY UPDATE",
        (t,),
    )
    removed = 0
    if queues:  # every consumer has a queue: none found, none dead
        removed = await tx.execute(
            "DELETE FROM amqp_consumers c WHERE NOT EXISTS ("
            "       SELECT 1 FROM nodes n WHERE n.id = c.node_id AND n.epoch = c.node_epoch"
            "          AND n.lease_expires_at > %s)",
            (t,),
        )
    departure = await _after_departures(tx, [int(q[0]) for q in queues])
    idle = await tx.fetchall(
        "SELECT id FROM amqp_queues q WHERE expires_ms IS NOT NULL"
        "   AND last_used_at + expires_ms * interval '1 millisecond' <= %s"
        "   AND NOT EXISTS (SELECT 1 FROM amqp_consumers c WHERE c.queue_id = q.id)"
        " ORDER BY id FOR NO KEY UPDATE SKIP LOCKED",
        (t,),
    )
    expired = await tx.fetchall(  # checked again now that they are locked
        "SELECT id FROM amqp_queues q WHERE id = ANY(%s)"
        "   AND last_used_at + expires_ms * interval '1 millisecond' <= %s"
        "   AND NOT EXISTS (SELECT 1 FROM amqp_consumers c WHERE c.queue_id = q.id)",
        ([int(r[0]) for r in idle], t),
    )
    await delete_queues(tx, [int(r[0]) for r in expired])
    return SweptConsumers(removed, len(departure.promoted), len(departure.deleted), len(expired))
