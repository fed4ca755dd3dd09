"""Deleting stream objects: those no index row references any more, and orphans that no row
ever named (docs/cluster.md, "Compaction, retention, garbage collection"; rule 6).

How it works. An object leaves the store only after a committed row has claimed its key with
``state = 'deleting'``; a commit can reference an object only by inserting (flush) or holding
(compaction) that same key's row, so a claim and a reference conflict on the key and one loses.

- :func:`collect_garbage` (the ``gc`` job): one transaction claims, ``FOR UPDATE``, the
  ``live`` objects whose count has been zero for longer than ``gc_grace`` (the count is checked
  again under the lock: rows are only ever added to new objects, so a claimed object cannot gain
  a reference), sets them ``deleting`` and commits; then they are deleted from the store; then
  their rows go. A round also finishes the claims an earlier round left (its node died between
  the claim and the delete): claimed rows older than ``gc_grace``.
- :func:`sweep_orphans` (the ``orphans`` job): lists ``intake/`` and ``p/``; for each key with
  no row whose ``LastModified`` is older than ``orphan_grace`` by the database's clock (far past
  a flush's bounded PUT-to-commit time), inserts a ``deleting`` row, commits, and only then
  deletes the object. A flush that commits later loses on that key (its step 1 finds the
  ``deleting`` row and fails). These marker rows carry no ``unreferenced_since``, which tells
  them from the collector's claims; they are kept ``deleting_kept`` (7 days) and then purged.
  Listed keys whose marker is still there are deleted again (a sweep that died half-way).
  Given a :class:`SweepCursor`, a sweep lists only the next ``sweep_page`` keys from where the
  cursor stands (S3's ``StartAfter``) and moves it on, wrapping round at the end: each round's
  cost stays bounded however many objects the store holds, and every key is seen again once
  per full pass.

Every transaction is fenced on the node's lease and the job's
(:func:`~wharf.cluster.streams.leases.check_job_lease`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from wharf.cluster.catalog import NodeLease
from wharf.cluster.database import Database, Transaction
from wharf.cluster.objectstore import ObjectInfo, ObjectStore
from wharf.cluster.streams.leases import check_job_lease

__all__ = ["GcSettings", "SWEPT_PREFIXES", "SweepCursor", "collect_garbage", "sweep_orphans"]

SWEPT_PREFIXES = ("intake/", "p/")
_RETRIES = 5
_DAY_S = 24 * 3600.0


@dataclass(frozen=True)
class GcSettings:
    gc_grace: float = 600.0
    """Seconds an object stays after its last reference went (longer than a fetch holds a
    range it read from the index)."""
    orphan_grace: float = 3600.0
    """Seconds an unnamed object is left alone (a flush may still commit it)."""
    deleting_kept: float = 7 * _DAY_S
    """Seconds the orphan sweep's ``deleting`` rows are kept, so that a late flush loses."""
    per_round: int = 1000
    """Objects claimed per collector round."""
    sweep_page: int = 10_000
    """Keys the orphan sweep lists per round when it goes by a :class:`SweepCursor`."""


@dataclass
class SweepCursor:
    """Where a paged orphan sweep stands: the prefix of :data:`SWEPT_PREFIXES` it is in and
    the last key it listed there (``None``: from the start of that prefix)."""

    prefix: int = 0
    after: str | None = None


async def collect_garbage(
    db: Database, store: ObjectStore, lease: NodeLease, settings: GcSettings
) -> list[str]:
    """One round of the collector; returns the keys deleted."""

    async def claim(tx: Transaction) -> list[str]:
        await check_job_lease(tx, lease, "gc", db.name)
        claimed = await tx.fetchall(
            "UPDATE stream_objects SET state = 'deleting', deleting_since = clock_timestamp()"
            " WHERE key IN (SELECT key FROM stream_objects"
            "                WHERE state = 'live' AND refs = 0"
            "                  AND unreferenced_since < statement_timestamp()"
            "                                           - make_interval(secs => %s)"
            "                ORDER BY unreferenced_since LIMIT %s FOR UPDATE)"
            "   AND state = 'live' AND refs = 0"
            " RETURNING key",
            (settings.gc_grace, settings.per_round),
        )
        unfinished = await tx.fetchall(
            "SELECT key FROM stream_objects"
            " WHERE state = 'deleting' AND unreferenced_since IS NOT NULL"
            "   AND deleting_since < clock_timestamp() - make_interval(secs => %s)"
            " LIMIT %s",
            (settings.gc_grace, settings.per_round),
        )
        return sorted({str(r[0]) for r in (*claimed, *unfinished)})

    keys = await db.run(claim, "streams.gc.claim", retries=_RETRIES)
    if not keys:
        return []
    await store.delete(keys)

    async def forget(tx: Transaction) -> None:
        await check_job_lease(tx, lease, "gc", db.name)
        await tx.execute(
            "DELETE FROM stream_objects WHERE key = ANY(%s) AND state = 'deleting'", (keys,)
        )

    await db.run(forget, "streams.gc.forget", retries=_RETRIES)
    return keys


async def sweep_orphans(
    db: Database,
    store: ObjectStore,
    lease: NodeLease,
    settings: GcSettings,
    cursor: SweepCursor | None = None,
) -> list[str]:
    """One sweep; returns the keys deleted (new orphans, and marked ones listed again). With
    ``cursor``, only the next ``settings.sweep_page`` keys after it, and the cursor moves on;
    without, every key."""
    if cursor is None:
        listed = [info for prefix in SWEPT_PREFIXES for info in await store.list(prefix)]
    else:
        listed = await _next_page(store, cursor, settings.sweep_page)

    async def mark(tx: Transaction) -> list[str]:
        await check_job_lease(tx, lease, "orphans", db.name)
        now = await tx.fetchval("SELECT clock_timestamp()")
        old = [
            info.key
            for info in listed
            if info.last_modified is not None
            and (now - info.last_modified).total_seconds() > settings.orphan_grace
        ]
        if not old:
            return []
        rows = await tx.fetchall(
            "SELECT key, state = 'deleting' AND unreferenced_since IS NULL"
            "  FROM stream_objects WHERE key = ANY(%s)",
            (old,),
        )
        known = {str(r[0]): bool(r[1]) for r in rows}
        marked = [k for k, is_marker in known.items() if is_marker]
        orphans = [k for k in old if k not in known]
        inserted = await _insert_markers(tx, orphans)
        return sorted({*marked, *inserted})

    doomed = await db.run(mark, "streams.orphans.mark", retries=_RETRIES)
    if doomed:
        await store.delete(doomed)

    async def purge(tx: Transaction) -> None:
        await check_job_lease(tx, lease, "orphans", db.name)
        await tx.execute(
            "DELETE FROM stream_objects"
            " WHERE state = 'deleting' AND unreferenced_since IS NULL"
            "   AND deleting_since < clock_timestamp() - make_interval(secs => %s)",
            (settings.deleting_kept,),
        )

    await db.run(purge, "streams.orphans.purge", retries=_RETRIES)
    return doomed


async def _next_page(store: ObjectStore, cursor: SweepCursor, page: int) -> list[ObjectInfo]:
    """Up to ``page`` keys from where ``cursor`` stands, across the swept prefixes in order;
    the cursor moves past them, and back to the start after the last prefix's last key."""
    listed: list[ObjectInfo] = []
    while len(listed) < page:
        if cursor.prefix >= len(SWEPT_PREFIXES):
            cursor.prefix, cursor.after = 0, None
            break
        want = page - len(listed)
        found = await store.list(SWEPT_PREFIXES[cursor.prefix], after=cursor.after, limit=want)
        listed.extend(found)
        if len(found) < want:
            cursor.prefix, cursor.after = cursor.prefix + 1, None
        else:
            cursor.after = found[-1].key
    return listed


async def _insert_markers(tx: Transaction, keys: Sequence[str]) -> list[str]:
    """``deleting`` rows for ``keys``; a key a commit inserted meanwhile keeps its row (the
    commit won) and is left out."""
    if not keys:
        return []
    rows = await tx.fetchall(
        "INSERT INTO stream_objects (key, kind, size, created_at, refs, state, deleting_since)"
        " SELECT k, CASE WHEN k LIKE 'p/%%' THEN 'partition' ELSE 'intake' END, 0,"
        "        clock_timestamp(), 0, 'deleting', clock_timestamp()"
        "   FROM unnest(%s::text[]) AS u(k)"
        " ON CONFLICT (key) DO NOTHING RETURNING key",
        (list(keys),),
    )
    return [str(r[0]) for r in rows]
