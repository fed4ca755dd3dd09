"""Large AMQP message bodies in the object store, and their garbage collection.

How it works (docs/cluster.md, "Large bodies"):

* **Publish.** A body larger than the threshold is PUT as the object ``amqp/bodies/<uuid>``
  (under the cluster's prefix) *before* the publish transaction; that transaction inserts the
  key into ``amqp_bodies`` and rows that carry the key (``body_key``, ``body_size``) instead
  of the bytes. The rows of one publish routed to several queues (or held by a delayed
  exchange) share the one object. The confirm still waits for the commit. ``amqp_bodies``
  takes each key once (primary key): a publish whose object the collector has already claimed
  as an orphan fails on it, and its publisher gets a nack, never a confirm for a row whose
  body is gone.
* **Claim.** The claiming node GETs the bodies of the rows it claimed, concurrently
  (:meth:`Bodies.fetch`); a body it cannot read is not delivered, its row is released.
* **Collection.** :func:`collect_bodies`, run by one node at a time (a transaction-level
  advisory lock) and fenced on that node's lease: marks ``deleting_since`` on the
  ``amqp_bodies`` rows no ``amqp_messages`` or ``amqp_held`` row names and commits, then
  DELETEs their objects and their rows. Rows naming a key are only ever inserted by the
  transaction that inserts the key, or moved (a delayed message's release) inside one
  transaction, so a key that no row names at one instant never gets one again: no grace is
  needed. A marked key whose DELETE did not happen (the node died) is deleted by a later round.
* **Orphans** (PUT, never committed: the publish transaction failed, or the node died in
  between). The same job lists ``amqp/bodies/``; a key with no ``amqp_bodies`` row whose
  object is older than ``orphan_grace`` (by the database's clock) gets an ``orphan`` marker
  row first, committed, and only then is deleted. Markers are kept for
  :data:`ORPHAN_MARKER_DAYS`, so a publish that would commit later still fails on its key.
  Given a :class:`ListingCursor`, a round lists only the next :data:`LISTING_PAGE` keys after
  where the last one stopped (S3's ``StartAfter``), wrapping round at the end, so a round's
  cost does not grow with the number of bodies stored.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from wharf.cluster.catalog import NodeLease, check_lease
from wharf.cluster.database import Database, Transaction
from wharf.cluster.objectstore import ObjectInfo, ObjectStore

__all__ = [
    "BODY_PREFIX",
    "DEFAULT_THRESHOLD",
    "ORPHAN_MARKER_DAYS",
    "Bodies",
    "BodyCollection",
    "ListingCursor",
    "collect_bodies",
    "register_keys",
]

BODY_PREFIX = "amqp/bodies/"
DEFAULT_THRESHOLD = 256 << 10
"""Bodies larger than this go to the object store (measured: docs/cluster.md)."""
ORPHAN_MARKER_DAYS = 7
_GC_LOCK = 0x77686172665F6267  # "wharf_bg": one body collector at a time
_ROUND = 1000  # keys marked (and deleted) per round
LISTING_PAGE = 10_000
"""Keys of ``amqp/bodies/`` the orphan sweep lists per round when it goes by a cursor."""


@dataclass
class ListingCursor:
    """The last key a paged orphan sweep listed (``None``: from the start)."""

    after: str | None = None


class Bodies:
    """The object store as the AMQP paths use it for bodies above ``threshold`` bytes."""

    def __init__(self, store: ObjectStore, threshold: int = DEFAULT_THRESHOLD) -> None:
        self.store = store
        self.threshold = threshold

    def offloads(self, body: bytes) -> bool:
        return len(body) > self.threshold

    async def put(self, body: bytes) -> str:
        """Write ``body`` as a new object; returns its key. ``ObjectStoreError`` on failure."""
        key = BODY_PREFIX + uuid.uuid4().hex
        await self.store.put(key, body)
        return key

    async def fetch(self, keys: Iterable[str]) -> dict[str, bytes | Exception]:
        """Each key's body, read concurrently, or the error that reading it raised."""
        unique = sorted(set(keys))
        found = await asyncio.gather(*(self.store.get(k) for k in unique), return_exceptions=True)
        out: dict[str, bytes | Exception] = {}
        for key, value in zip(unique, found, strict=True):
            if isinstance(value, Exception):
                out[key] = value
            elif isinstance(value, BaseException):
                raise value
            else:
                out[key] = value
        return out


async def register_keys(tx: Transaction, keys: Sequence[str]) -> None:
    """Record the body objects a publish transaction's rows name (fails if one was claimed)."""
    if keys:
        await tx.execute(
            "INSERT INTO amqp_bodies (key) SELECT unnest(%s::text[])", (list(keys),)
        )


@dataclass(frozen=True, slots=True)
class BodyCollection:
    """One round: ``ran`` False when another node was collecting; ``deleted``: unreferenced
    bodies deleted; ``orphans``: objects no publish committed, deleted."""

    ran: bool
    deleted: int = 0
    orphans: int = 0


async def collect_bodies(
    db: Database,
    store: ObjectStore,
    lease: NodeLease,
    orphan_grace_s: float,
    cursor: ListingCursor | None = None,
) -> BodyCollection:
    """One round of the collector (see the module docstring), fenced on ``lease``; with
    ``cursor``, its orphan sweep lists one page of keys from there and moves the cursor on."""

    async def mark(tx: Transaction) -> list[str] | None:
        await check_lease(tx, lease, db.name)
        if not await tx.fetchval("SELECT pg_try_advisory_xact_lock(%s)", (_GC_LOCK,)):
            return None
        await tx.execute(
            "UPDATE amqp_bodies SET deleting_since = clock_timestamp() WHERE key IN ("
            " SELECT b.key FROM amqp_bodies b WHERE b.deleting_since IS NULL"
            "    AND NOT EXISTS (SELECT 1 FROM amqp_messages m WHERE m.body_key = b.key)"
            "    AND NOT EXISTS (SELECT 1 FROM amqp_held h WHERE h.body_key = b.key)"
            "  LIMIT %s FOR UPDATE SKIP LOCKED)",
            (_ROUND,),
        )
        rows = await tx.fetchall(
            "SELECT key FROM amqp_bodies WHERE deleting_since IS NOT NULL AND NOT orphan"
            " ORDER BY key LIMIT %s",
            (_ROUND,),
        )
        return [str(r[0]) for r in rows]

    marked = await db.run(mark, "amqp.bodies.mark", retries=3)
    if marked is None:
        return BodyCollection(False)
    if marked:
        await store.delete(marked)
        async with db.transaction("amqp.bodies.forget") as tx:
            await tx.execute(
                "DELETE FROM amqp_bodies WHERE key = ANY(%s) AND NOT orphan", (marked,)
            )
    orphans = await _sweep_orphans(db, store, lease, orphan_grace_s, cursor)
    return BodyCollection(True, len(marked), orphans)


async def _sweep_orphans(
    db: Database,
    store: ObjectStore,
    lease: NodeLease,
    orphan_grace_s: float,
    cursor: ListingCursor | None,
) -> int:
    if cursor is None:
        listed: list[ObjectInfo] = await store.list(BODY_PREFIX)
    else:
        listed = await store.list(BODY_PREFIX, after=cursor.after, limit=LISTING_PAGE)
        cursor.after = listed[-1].key if len(listed) == LISTING_PAGE else None

    async def mark(tx: Transaction) -> list[str]:
        await check_lease(tx, lease, db.name)
        now = await tx.fetchval("SELECT clock_timestamp()")
        old = [
            info.key
            for info in listed
            if info.last_modified is not None
            and (now - info.last_modified).total_seconds() > orphan_grace_s
        ]
        new = await tx.fetchall(
            "INSERT INTO amqp_bodies (key, deleting_since, orphan)"
            " SELECT unnest(%s::text[]), clock_timestamp(), true"
            " ON CONFLICT DO NOTHING RETURNING key",
            (old,),
        )
        again = await tx.fetchall(
            "SELECT key FROM amqp_bodies WHERE orphan AND key = ANY(%s)",
            ([info.key for info in listed],),
        )
        await tx.execute(
            "DELETE FROM amqp_bodies WHERE orphan"
            "   AND deleting_since < statement_timestamp() - make_interval(days => %s)",
            (ORPHAN_MARKER_DAYS,),
        )
        return sorted({str(r[0]) for r in new} | {str(r[0]) for r in again})

    doomed = await db.run(mark, "amqp.bodies.orphans", retries=3) if listed else []
    if doomed:
        await store.delete(doomed)
    return len(doomed)
