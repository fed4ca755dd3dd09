"""Leases of the streams' background jobs (compaction, retention, garbage collection, the orphan
sweep): at most one node runs each job at a time, and whatever it writes is fenced.

How it works. A job's lease is its ``stream_leases`` row: the holder's node id and node epoch.
:func:`acquire_job_lease` takes it, in one transaction, when the row is missing, already this
registration's, or held by a registration that is over: the holder's ``nodes`` row is gone,
carries another epoch, or its lease expired by the database's clock. A holder that looks live
is left alone without a lock; one that looks over has its ``nodes`` row locked ``FOR UPDATE`` and
checked again (the takeover pattern of :mod:`wharf.cluster.nodes`), so a fenced write it still
had in flight either committed first or waits and then finds it no longer holds the job.

:func:`check_job_lease` is the fence of every job transaction: the job's row ``FOR SHARE``, still
naming this node and epoch, then the node lease itself (:func:`~wharf.cluster.catalog.check_lease`).
The job row is locked before the node row, in the order the takeover locks them, so the two never
deadlock. A failed fence raises :class:`~wharf.cluster.nodes.LeaseLostError`, which rolls the
transaction back.
"""

from __future__ import annotations

from typing import Literal

from wharf.cluster.catalog import NodeLease, check_lease
from wharf.cluster.database import Database, Transaction
from wharf.cluster.nodes import LeaseLostError

__all__ = ["JOBS", "JobName", "acquire_job_lease", "check_job_lease", "job_lease_holder"]

JobName = Literal["compactor", "retention", "gc", "orphans"]
JOBS: tuple[JobName, ...] = ("compactor", "retention", "gc", "orphans")
_RETRIES = 3


async def acquire_job_lease(db: Database, lease: NodeLease, job: JobName) -> bool:
    """Take (or keep) ``job`` for this registration; False while another live one holds it.
    ``LeaseLostError`` when this node's own lease is over."""

    async def body(tx: Transaction) -> bool:
        row = await tx.fetchone(
            "SELECT node_id, node_epoch FROM stream_leases WHERE name = %s FOR UPDATE", (job,)
        )
        if row is None:
            await check_lease(tx, lease, db.name)
            inserted = await tx.fetchval(
                "INSERT INTO stream_leases (name, node_id, node_epoch, acquired_at)"
                " VALUES (%s, %s, %s, clock_timestamp()) ON CONFLICT (name) DO NOTHING"
                " RETURNING 1",
                (job, lease.node_id, lease.epoch),
            )
            return inserted is not None
        holder, epoch = str(row[0]), int(row[1])
        if (holder, epoch) == (lease.node_id, lease.epoch):
            await check_lease(tx, lease, db.name)
            return True
        if await _holder_live(tx, holder, epoch, lock=False):
            return False
        if await _holder_live(tx, holder, epoch, lock=True):
            return False
        await check_lease(tx, lease, db.name)
        await tx.execute(
            "UPDATE stream_leases SET node_id = %s, node_epoch = %s,"
            "   acquired_at = clock_timestamp() WHERE name = %s",
            (lease.node_id, lease.epoch, job),
        )
        return True

    return await db.run(body, f"streams.lease.{job}", retries=_RETRIES)


async def _holder_live(tx: Transaction, node_id: str, epoch: int, *, lock: bool) -> bool:
    """Whether the registration (``node_id``, ``epoch``) still holds its node lease; with
    ``lock``, its ``nodes`` row stays locked ``FOR UPDATE`` until the transaction ends."""
    if lock:
        row = await tx.fetchone(
            "SELECT epoch, lease_expires_at > clock_timestamp() FROM nodes WHERE id = %s"
            " FOR UPDATE",
            (node_id,),
        )
    else:
        row = await tx.fetchone(
            "SELECT epoch, lease_expires_at > clock_timestamp() FROM nodes WHERE id = %s",
            (node_id,),
        )
    return row is not None and int(row[0]) == epoch and bool(row[1])


async def check_job_lease(
    tx: Transaction, lease: NodeLease, job: JobName, database: str
) -> None:
    """The fence of a job's transaction (see the module docstring)."""
    held = await tx.fetchval(
        "SELECT 1 FROM stream_leases WHERE name = %s AND node_id = %s AND node_epoch = %s"
        " FOR SHARE",
        (job, lease.node_id, lease.epoch),
    )
    if held is None:
        raise LeaseLostError(
            database, f"node {lease.node_id} (epoch {lease.epoch}) does not hold the {job} lease"
        )
    await check_lease(tx, lease, database)


async def job_lease_holder(db: Database, job: JobName) -> NodeLease | None:
    """Who holds ``job`` now, as recorded (live or not)."""
    async with db.transaction("streams.lease.holder") as tx:
        row = await tx.fetchone(
            "SELECT node_id, node_epoch FROM stream_leases WHERE name = %s", (job,)
        )
    return None if row is None else NodeLease(str(row[0]), int(row[1]))
