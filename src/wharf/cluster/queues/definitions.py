"""The AMQP definitions of a cluster: vhosts, exchanges, queues, bindings and users.

How it works: every change is one short transaction that ends with
``pg_notify('wharf_amqp_definitions', <vhost>)``, so each node's cache (the core's
:mod:`wharf.core.queues.cluster_registry`) hears of it once it commits and reloads; a node reads
them all with :func:`load_definitions` (they are few). Declarations insert with ``ON CONFLICT
DO NOTHING``: of concurrent declarers on any nodes exactly one row goes in, and the others
compare what they asked for with what is there (the caller's work, as in single-node mode).

The users and permissions are one JSON document (``amqp_users``), seeded by the first node
that finds none and replaced whole by every change (the last one wins: they change rarely, by
an operator). Argument tables are stored as text the caller encodes (AMQP field tables in
base64, sorted by key so that equal tables are equal strings). An exclusive queue names its
owner: the node, the node's epoch (the registration it was declared under) and a connection
token of that node's choosing; :func:`delete_queue` takes its messages and bindings with it, and
:func:`~wharf.cluster.queues.messages.sweep` deletes the exclusive queues of dead epochs.

Deleting a queue locks its row first (the ``DELETE``), and publishes lock the rows of the queues
they insert into (``FOR KEY SHARE``, :mod:`.messages`), so no message row outlives its queue.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

from wharf.cluster.database import Database, Transaction

__all__ = [
    "CHANNEL",
    "BindingRow",
    "Definitions",
    "ExchangeRow",
    "QueueRow",
    "bind",
    "create_vhost",
    "declare_exchange",
    "declare_queue",
    "delete_exchange",
    "delete_queue",
    "delete_queues",
    "delete_vhost",
    "load_definitions",
    "save_users",
    "seed_users",
    "unbind",
]

CHANNEL = "wharf_amqp_definitions"
"""Every definitions change is announced here, with its vhost as payload."""


@dataclass(frozen=True, slots=True)
class ExchangeRow:
    vhost: str
    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: str


@dataclass(frozen=True, slots=True)
class QueueRow:
    """A queue; ``owner_*`` set for an exclusive queue (node id, epoch, connection token);
    ``delivery_limit``: x-delivery-limit, applied by the settlements and the sweep;
    ``max_length``, ``max_length_bytes``: applied by the publishes (drop-head);
    ``single_active``: x-single-active-consumer; ``expires_ms``: x-expires (both applied through
    :mod:`.consumers`)."""

    id: int
    vhost: str
    name: str
    durable: bool
    auto_delete: bool
    arguments: str
    owner_node: str | None = None
    owner_epoch: int | None = None
    owner_connection: str | None = None
    delivery_limit: int | None = None
    max_length: int | None = None
    max_length_bytes: int | None = None
    single_active: bool = False
    expires_ms: int | None = None


@dataclass(frozen=True, slots=True)
class BindingRow:
    """``kind`` is ``"queue"`` or ``"exchange"`` (the destination's)."""

    vhost: str
    source: str
    kind: str
    destination: str
    routing_key: str
    arguments: str


@dataclass(frozen=True, slots=True)
class Definitions:
    vhosts: list[str]
    exchanges: list[ExchangeRow]
    queues: list[QueueRow]
    bindings: list[BindingRow]
    users: dict[str, Any] | None = None
    """The users and permissions document (None until a node seeded it)."""


async def load_definitions(db: Database) -> Definitions:
    """Everything, in one snapshot (repeatable read)."""
    async with db.transaction("amqp.definitions.load", isolation="repeatable read") as tx:
        vhosts = await tx.fetchall("SELECT name FROM amqp_vhosts ORDER BY name")
        exchanges = await tx.fetchall(
            "SELECT vhost, name, type, durable, auto_delete, internal, arguments"
            "  FROM amqp_exchanges ORDER BY vhost, name"
        )
        queues = await tx.fetchall(
            "SELECT id, vhost, name, durable, auto_delete, arguments, owner_node, owner_epoch,"
            "       owner_connection, delivery_limit, max_length, max_length_bytes,"
            "       single_active, expires_ms"
            "  FROM amqp_queues ORDER BY vhost, name"
        )
        bindings = await tx.fetchall(
            "SELECT vhost, source, kind, destination, routing_key, arguments"
            "  FROM amqp_bindings ORDER BY vhost, source, kind, destination, routing_key"
        )
        users = await tx.fetchval("SELECT data FROM amqp_users")
    return Definitions(
        [r[0] for r in vhosts],
        [ExchangeRow(*r) for r in exchanges],
        [QueueRow(*r) for r in queues],
        [BindingRow(*r) for r in bindings],
        users,
    )


async def seed_users(db: Database, data: dict[str, Any]) -> None:
    """Store ``data`` as the users document unless there is one already."""
    async with db.transaction("amqp.users.seed") as tx:
        await tx.execute(
            "INSERT INTO amqp_users (data) VALUES (%s::jsonb) ON CONFLICT DO NOTHING",
            (json.dumps(data),),
        )


async def save_users(db: Database, data: dict[str, Any]) -> None:
    """Replace the users document (the last save wins) and announce it."""
    async with db.transaction("amqp.users.save") as tx:
        await tx.execute(
            "INSERT INTO amqp_users (data) VALUES (%s::jsonb)"
            " ON CONFLICT (singleton) DO UPDATE SET data = EXCLUDED.data",
            (json.dumps(data),),
        )
        await _notify(tx, "")


async def _notify(tx: Transaction, vhost: str) -> None:
    await tx.execute("SELECT pg_notify(%s, %s)", (CHANNEL, vhost))


async def create_vhost(db: Database, name: str) -> None:
    async with db.transaction("amqp.vhost.create") as tx:
        await tx.execute(
            "INSERT INTO amqp_vhosts (name) VALUES (%s) ON CONFLICT DO NOTHING", (name,)
        )
        await _notify(tx, name)


async def delete_vhost(db: Database, name: str) -> None:
    """The vhost with its exchanges, queues, bindings and messages."""
    async with db.transaction("amqp.vhost.delete") as tx:
        await tx.execute(
            "DELETE FROM amqp_messages WHERE queue_id IN"
            " (SELECT id FROM amqp_queues WHERE vhost = %s)",
            (name,),
        )
        await tx.execute("DELETE FROM amqp_vhosts WHERE name = %s", (name,))
        await _notify(tx, name)


async def declare_exchange(db: Database, row: ExchangeRow) -> ExchangeRow:
    """Insert ``row`` unless the exchange exists; returns the row in force."""
    async with db.transaction("amqp.exchange.declare") as tx:
        inserted = await tx.execute(
            "INSERT INTO amqp_exchanges (vhost, name, type, durable, auto_delete, internal,"
            "                            arguments) VALUES (%s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (row.vhost, row.name, row.type, row.durable, row.auto_delete, row.internal,
             row.arguments),
        )  # fmt: skip
        if inserted:
            await _notify(tx, row.vhost)
            return row
        found = await tx.fetchone(
            "SELECT vhost, name, type, durable, auto_delete, internal, arguments"
            "  FROM amqp_exchanges WHERE vhost = %s AND name = %s",
            (row.vhost, row.name),
        )
    return row if found is None else ExchangeRow(*found)


async def delete_exchange(db: Database, vhost: str, name: str) -> None:
    """The exchange and every binding it is the source or destination of."""
    async with db.transaction("amqp.exchange.delete") as tx:
        await tx.execute(
            "DELETE FROM amqp_bindings WHERE vhost = %s"
            "   AND (source = %s OR (kind = 'exchange' AND destination = %s))",
            (vhost, name, name),
        )
        await tx.execute(
            "DELETE FROM amqp_exchanges WHERE vhost = %s AND name = %s", (vhost, name)
        )
        await _notify(tx, vhost)


async def declare_queue(db: Database, row: QueueRow) -> tuple[QueueRow, bool]:
    """Insert ``row`` (its ``id`` is ignored) unless the queue exists; returns the row in force
    and whether this call created it."""
    async with db.transaction("amqp.queue.declare") as tx:
        new_id = await tx.fetchval(
            "INSERT INTO amqp_queues (vhost, name, durable, auto_delete, arguments, owner_node,"
            "                         owner_epoch, owner_connection, delivery_limit, max_length,"
            "                         max_length_bytes, single_active, expires_ms)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " ON CONFLICT DO NOTHING RETURNING id",
            (row.vhost, row.name, row.durable, row.auto_delete, row.arguments, row.owner_node,
             row.owner_epoch, row.owner_connection, row.delivery_limit, row.max_length,
             row.max_length_bytes, row.single_active, row.expires_ms),
        )  # fmt: skip
        if new_id is not None:
            await _notify(tx, row.vhost)
            return replace(row, id=int(new_id)), True
        found = await tx.fetchone(
            "SELECT id, vhost, name, durable, auto_delete, arguments, owner_node, owner_epoch,"
            "       owner_connection, delivery_limit, max_length, max_length_bytes,"
            "       single_active, expires_ms"
            "  FROM amqp_queues WHERE vhost = %s AND name = %s",
            (row.vhost, row.name),
        )
    if found is None:  # deleted between the two statements: the caller may declare again
        return await declare_queue(db, row)
    return QueueRow(*found), False


async def delete_queue(db: Database, queue_id: int) -> int:
    """The queue, its bindings and its messages; returns how many messages were ready."""
    async with db.transaction("amqp.queue.delete") as tx:
        return await delete_queues(tx, [queue_id])


async def delete_queues(tx: Transaction, queue_ids: list[int]) -> int:
    """Delete the queues that still exist among ``queue_ids`` (their consumers go by cascade),
    with their bindings and messages, and announce it; returns how many messages were ready."""
    if not queue_ids:
        return 0
    rows = await tx.fetchall(
        "DELETE FROM amqp_queues WHERE id = ANY(%s) RETURNING id, vhost, name", (queue_ids,)
    )
    if not rows:
        return 0
    ready = await tx.fetchval(
        "WITH gone AS (DELETE FROM amqp_messages WHERE queue_id = ANY(%s)"
        "              RETURNING claimed_epoch)"
        " SELECT count(*) FILTER (WHERE claimed_epoch IS NULL) FROM gone",
        ([int(r[0]) for r in rows],),
    )
    for _, vhost, name in rows:
        await tx.execute(
            "DELETE FROM amqp_bindings WHERE vhost = %s AND kind = 'queue' AND destination = %s",
            (vhost, name),
        )
    for vhost in sorted({str(r[1]) for r in rows}):
        await _notify(tx, vhost)
    return int(ready or 0)


async def bind(db: Database, row: BindingRow) -> bool:
    """Add the binding; False when it was there already."""
    async with db.transaction("amqp.bind") as tx:
        added = await tx.execute(
            "INSERT INTO amqp_bindings (vhost, source, kind, destination, routing_key, arguments)"
            " VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            (row.vhost, row.source, row.kind, row.destination, row.routing_key, row.arguments),
        )
        if added:
            await _notify(tx, row.vhost)
    return bool(added)


async def unbind(db: Database, row: BindingRow) -> bool:
    """Remove the binding; False when there was none."""
    async with db.transaction("amqp.unbind") as tx:
        removed = await tx.execute(
            "DELETE FROM amqp_bindings WHERE vhost = %s AND source = %s AND kind = %s"
            "   AND destination = %s AND routing_key = %s AND arguments = %s",
            (row.vhost, row.source, row.kind, row.destination, row.routing_key, row.arguments),
        )
        if removed:
            await _notify(tx, row.vhost)
    return bool(removed)
