"""Messages held by the cluster's x-delayed-message exchanges: ``amqp_held`` rows.

How it works (docs/cluster.md, "Delayed exchanges"):

* **Hold.** A publish that a delayed exchange holds (an ``x-delay`` header > 0) becomes an
  ``amqp_held`` row, inserted by the node's group-committing publish transaction
  (:func:`insert_held`, beside the queue rows of the same batch), due at the commit's time on
  the database's clock plus the delay. The exchange's row is locked ``FOR KEY SHARE`` first,
  so an exchange deleted meanwhile takes no row; deleting the exchange deletes its rows (a
  foreign key ``ON DELETE CASCADE``). The confirm waits for that commit, as for queue rows.
* **Release.** :func:`release_due`, run by one node at a time (a transaction-level advisory
  lock) and fenced on its lease, takes the due rows ``FOR UPDATE SKIP LOCKED`` in due order
  and hands them to the caller's ``release`` inside the same transaction: it routes them on
  the node's cached bindings and inserts the queue rows; the held rows it says it released
  are deleted by that transaction. Either both happen or neither: no loss, no duplicate.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from wharf.cluster.catalog import NodeLease, check_lease
from wharf.cluster.database import Database, Transaction

__all__ = ["HeldMessage", "NewHeld", "insert_held", "release_due"]

_RELEASE_LOCK = 0x77686172665F646C  # "wharf_dl": one releaser at a time
_RELEASE_BATCH = 1000


@dataclass(frozen=True, slots=True)
class NewHeld:
    """A message the delayed exchange ``exchange`` holds for ``delay_ms`` from the commit;
    ``message_exchange`` is the exchange it was published to."""

    vhost: str
    exchange: str
    delay_ms: int
    message_exchange: str
    routing_key: str
    properties: bytes
    body: bytes
    body_key: str | None = None
    body_size: int | None = None


@dataclass(frozen=True, slots=True)
class HeldMessage:
    """A due ``amqp_held`` row (``body`` is empty when ``body_key`` names its object)."""

    seq: int
    vhost: str
    exchange: str
    message_exchange: str
    routing_key: str
    properties: bytes
    body: bytes
    body_key: str | None
    body_size: int | None


async def insert_held(tx: Transaction, rows: Sequence[NewHeld]) -> int:
    """Insert ``rows`` (those of exchanges that no longer exist are left out)."""
    if not rows:
        return 0
    return await tx.execute(
        "WITH live AS (SELECT vhost, name FROM amqp_exchanges"
        "               WHERE (vhost, name) IN (SELECT * FROM unnest(%s::text[], %s::text[]))"
        "               FOR KEY SHARE)"
        " INSERT INTO amqp_held (vhost, exchange, due_at, message_exchange, routing_key,"
        "                        properties, body, body_key, body_size)"
        " SELECT u.vhost, u.exchange,"
        "        (extract(epoch FROM clock_timestamp()) * 1000)::bigint + u.delay,"
        "        u.message_exchange, u.routing_key, u.properties, u.body, u.body_key, u.body_size"
        "   FROM unnest(%s::text[], %s::text[], %s::bigint[], %s::text[], %s::text[],"
        "               %b::bytea[], %b::bytea[], %s::text[], %s::bigint[]) WITH ORDINALITY"
        "        AS u(vhost, exchange, delay, message_exchange, routing_key, properties, body,"
        "             body_key, body_size, ord)"
        "  WHERE (u.vhost, u.exchange) IN (SELECT vhost, name FROM live)"
        "  ORDER BY u.ord",
        (
            [r.vhost for r in rows],
            [r.exchange for r in rows],
            [r.vhost for r in rows],
            [r.exchange for r in rows],
            [r.delay_ms for r in rows],
            [r.message_exchange for r in rows],
            [r.routing_key for r in rows],
            [r.properties for r in rows],
            [r.body for r in rows],
            [r.body_key for r in rows],
            [r.body_size for r in rows],
        ),
    )


Release = Callable[[Transaction, list[HeldMessage]], Awaitable[list[int]]]
"""Routes due messages inside the release transaction; returns the seqs it released (those
it cannot route yet, e.g. an exchange this node does not know of, stay held)."""


async def release_due(db: Database, lease: NodeLease, release: Release) -> int | None:
    """One release round (see the module docstring); returns how many held rows it released,
    None when another node was releasing. ``LeaseLostError`` without a live lease."""

    async def body(tx: Transaction) -> int | None:
        await check_lease(tx, lease, db.name)
        if not await tx.fetchval("SELECT pg_try_advisory_xact_lock(%s)", (_RELEASE_LOCK,)):
            return None
        rows = await tx.fetchall(
            "SELECT seq, vhost, exchange, message_exchange, routing_key, properties, body,"
            "       body_key, body_size FROM amqp_held"
            " WHERE due_at <= (extract(epoch FROM statement_timestamp()) * 1000)::bigint"
            " ORDER BY due_at, seq LIMIT %s FOR UPDATE SKIP LOCKED",
            (_RELEASE_BATCH,),
        )
        if not rows:
            return 0
        due = [
            HeldMessage(
                int(r[0]), str(r[1]), str(r[2]), str(r[3]), str(r[4]), bytes(r[5]),
                bytes(r[6]), None if r[7] is None else str(r[7]),
                None if r[8] is None else int(r[8]),
            )  # fmt: skip
            for r in rows
        ]
        released = await release(tx, due)
        if released:
            await tx.execute("DELETE FROM amqp_held WHERE seq = ANY(%s)", (released,))
        return len(released)

    return await db.run(body, "amqp.held.release", retries=3)
