"""The messages of the cluster's AMQP queues: one ``amqp_messages`` row each, claimed by nodes.

How it works (docs/cluster.md, "Queues (AMQP) in a cluster"):

* **Publish.** :class:`MessageWriter` group-commits: publishes that arrive while a transaction
  runs wait for the next one, which inserts them all with one ``INSERT ... SELECT FROM
  unnest(...)`` (in arrival order, so ``seq``, the queue order, follows publish order), after
  locking the rows of their queues ``FOR KEY SHARE`` (a queue deleted meanwhile takes no row),
  and sends ``pg_notify('wharf_amqp_messages', <queue ids>)``, all in one statement: a
  transaction of its own, one round trip. A batch that needs more (below) runs in a
  transaction whose ``BEGIN`` goes out with its first statement (``lazy_begin``). A queue with
  x-max-length(-bytes) is locked ``FOR UPDATE`` before and trimmed after, in the same
  transaction (drop-head); under ``reject-publish(-dlx)`` its ready rows are counted instead,
  and a row that does not fit is left out (its publish alone resolves to False: a nack). Its
  future resolves only after ``COMMIT``: that is when a publisher confirm may go out. One
  transaction runs at a time per node, so one node's publishes commit in order. A body above the
  threshold is PUT to the object store first and the rows name its object (:mod:`.bodies`); a
  batch stops before a publish whose PUT is still running, so the order holds. The same
  transaction inserts the rows of delayed exchanges' holds (:mod:`.held`).
* **Claim.** :func:`claim` marks up to ``n`` ready rows of a queue (highest priority first,
  then oldest) with the claiming node's id and epoch, ``FOR UPDATE SKIP LOCKED`` so that nodes
  claiming together take different rows, after checking and share-locking the node's lease in
  the same transaction (fencing: a node whose lease is gone claims nothing). Expired rows are
  not claimed.
* **Settle.** :class:`Settler` batches the settlements of one node: *delete* (ack, auto-ack,
  reject without requeue, expiry) and *release* (requeue: the row is unclaimed, its
  ``delivery_count`` raised when it had been delivered, and deleted when that count exceeds its
  queue's ``delivery_limit``). Each batch is one transaction per
  epoch, fenced on that epoch's lease and matching only rows still claimed by it: a node
  whose lease was lost or replaced settles nothing, and its claims come back by the sweep.
  A batch that fails otherwise (the database unreachable, a commit whose outcome is unknown) is
  tried again, with what came after it, every ``retry_interval``: settlements only match rows
  still claimed by their epoch, so doing one twice changes nothing the first did not.
  :meth:`Settler.drained` waits for the settlements queued before it (a consumer's requeues
  commit before its registration is removed: :mod:`.consumers`).
* **Sweep.** :func:`sweep`, run by every node each interval and by one at a time (a
  transaction-level advisory lock), releases the claims of epochs that are not live at one
  instant ``t`` of the database's clock (their rows' ``delivery_count`` raised: they were
  delivered; which epochs have claimed is in ``amqp_claim_epochs``, which every claim
  fills, as no index covers the claim's columns), deletes the exclusive queues of such
  epochs, and drops expired ready rows;
  then :func:`~wharf.cluster.queues.consumers.sweep_consumers` removes such epochs' consumers
  (single active consumer, auto-delete and x-expires follow from it).
  It first locks ``FOR UPDATE`` the ``nodes`` rows whose lease ended by ``t``, so a fenced
  settlement of such a node that passed its lease check either committed before or fails
  after; an epoch with no row at all (replaced or deregistered) can pass no lease check.
* **Dead-lettering.** Every path that deletes a row for good but an ack (a reject without
  requeue, the delivery limit, an expiry at claim time or by the sweep, a drop-head trim, a
  ``reject-publish-dlx`` refusal) deletes it and inserts its dead-lettered copies in the same
  transaction (:func:`_remove`), routed by the node's
  :class:`~wharf.cluster.queues.dead_letters.DeadLetterRouting`: a crash never leaves the
  message in both queues or in neither.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any, LiteralString

from wharf.cluster.catalog import NodeLease, check_lease
from wharf.cluster.database import Database, DatabaseError, StatementSettings, Transaction
from wharf.cluster.nodes import LeaseLostError
from wharf.cluster.queues.bodies import Bodies, register_keys
from wharf.cluster.queues.consumers import SweptConsumers, sweep_consumers
from wharf.cluster.queues.dead_letters import (
    DROP_HEAD,
    REJECT_PUBLISH_DLX,
    DeadLetterRouting,
    DeadMessage,
)
from wharf.cluster.queues.held import NewHeld, insert_held

__all__ = [
    "CHANNEL",
    "CLAIM_PLANNER_SETTINGS",
    "CLAIM_STATEMENT",
    "DELETE_PLANNER_SETTINGS",
    "DELETE_STATEMENT",
    "EXPIRED",
    "MAX_DEAD_LETTER_HOPS",
    "ClaimedMessage",
    "MessageWriter",
    "NewMessage",
    "Settler",
    "SweepResult",
    "claim",
    "claimed_with",
    "purge",
    "ready_count",
    "seq_runs",
    "sweep",
]

log = logging.getLogger(__name__)

CHANNEL = "wharf_amqp_messages"
"""Published or released messages are announced here: comma-separated queue ids."""
_SWEEP_LOCK = 0x77686172665F7377  # "wharf_sw": one sweeper at a time
_MAX_BATCH_ROWS = 5000
_MAX_BATCH_BYTES = 4 << 20
_RETRIES = 3
MAX_DEAD_LETTER_HOPS = 16
"""Dead-letterings chained in one transaction (a full queue whose dead-letter exchange leads
to another full queue...) beyond which the copies are dropped."""


@dataclass(frozen=True, slots=True)
class NewMessage:
    """A message for one queue; ``ttl_ms`` counts from the commit, on the database's clock."""

    queue_id: int
    priority: int
    ttl_ms: int | None
    exchange: str
    routing_key: str
    properties: bytes
    body: bytes
    limited: bool = False
    """The queue has x-max-length or x-max-length-bytes."""
    overflow: str = DROP_HEAD
    """The queue's x-overflow (what a full queue does)."""
    body_key: str | None = None
    """The object holding the body (``body`` is then empty; see :mod:`.bodies`)."""
    body_size: int | None = None

    @property
    def size(self) -> int:
        """The body's size, wherever it is kept."""
        return len(self.body) if self.body_size is None else self.body_size


@dataclass(slots=True)
class ClaimedMessage:
    """A row claimed by ``epoch``; ``delivery_count`` counts its earlier deliveries;
    ``expires_at`` is in ms since the epoch, on the database's clock."""

    seq: int
    priority: int
    expires_at: int | None
    delivery_count: int
    exchange: str
    routing_key: str
    properties: bytes
    body: bytes
    epoch: int
    body_key: str | None = None
    """The object holding the body, when ``body`` is still to be read from it."""


def _notify_sql(queue_ids: Iterable[int]) -> str:
    return ",".join(str(q) for q in sorted(set(queue_ids)))


async def _notify(tx: Transaction, queue_ids: Iterable[int]) -> None:
    payload = _notify_sql(queue_ids)
    if payload:
        await tx.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))


async def insert_messages(
    tx: Transaction,
    rows: Sequence[NewMessage],
    routing: DeadLetterRouting | None = None,
    *,
    hops: int = 0,
) -> list[bool]:
    """Insert ``rows`` in order (those of queues that no longer exist are left out) and
    announce their queues, in one statement; returns, per row, whether its queue took it
    (False: refused by ``reject-publish(-dlx)``, the queue full). Queues with a length limit are
    locked first (their publishes are serial), checked before (reject-publish) or trimmed after
    (drop-head); with ``routing``, what they refuse or drop is dead-lettered in ``tx``."""
    limited = sorted({r.queue_id for r in rows if r.limited})
    limits: dict[int, tuple[int | None, int | None]] = {}
    if limited:
        for queue_id, max_length, max_bytes in await tx.fetchall(
            "SELECT id, max_length, max_length_bytes FROM amqp_queues WHERE id = ANY(%s)"
            " ORDER BY id FOR UPDATE",
            (limited,),
        ):
            limits[int(queue_id)] = (max_length, max_bytes)
    refused = await _refused(tx, rows, limits)
    kept = [r for i, r in enumerate(rows) if i not in refused] if refused else rows
    if kept:
        await _insert(tx, kept)
    for queue_id in sorted({r.queue_id for r in kept if r.limited and r.overflow == DROP_HEAD}):
        await _trim(tx, queue_id, routing, hops)
    if routing is not None:
        dlx = [rows[i] for i in sorted(refused) if rows[i].overflow == REJECT_PUBLISH_DLX]
        if dlx:
            await _insert_copies(tx, [
                DeadMessage(r.queue_id, r.exchange, r.routing_key, r.properties, r.body, "maxlen",
                            r.body_key, r.body_size)
                for r in dlx
            ], routing, hops)  # fmt: skip
    return [i not in refused for i in range(len(rows))]


async def _insert(tx: Transaction, rows: Sequence[NewMessage]) -> None:
    await tx.fetchval(_INSERT, _insert_params(rows))


_INSERT: LiteralString = (
    "WITH live AS (SELECT id FROM amqp_queues WHERE id = ANY(%s) FOR KEY SHARE),"
    " added AS ("
    "  INSERT INTO amqp_messages (queue_id, priority, expires_at, exchange, routing_key,"
    "                             properties, body, body_key, body_size)"
    "  SELECT u.queue_id, u.priority,"
    "         CASE WHEN u.ttl IS NULL THEN NULL"
    "              ELSE (extract(epoch FROM clock_timestamp()) * 1000)::bigint + u.ttl END,"
    "         u.exchange, u.routing_key, u.properties, u.body, u.body_key, u.body_size"
    "    FROM unnest(%s::bigint[], %s::smallint[], %s::bigint[], %s::text[], %s::text[],"
    "                %b::bytea[], %b::bytea[], %s::text[], %s::bigint[]) WITH ORDINALITY"
    "         AS u(queue_id, priority, ttl, exchange, routing_key, properties, body,"
    "              body_key, body_size, ord)"
    "   WHERE u.queue_id IN (SELECT id FROM live)"
    "   ORDER BY u.ord"
    "  RETURNING queue_id)"
    " SELECT count(*), pg_notify(%s, coalesce(string_agg(DISTINCT queue_id::text, ','), ''))"
    "   FROM added"
)
"""Rows inserted in order, the queues still there locked ``FOR KEY SHARE`` against their
deletion, and their queues announced: one statement."""


def _insert_params(rows: Sequence[NewMessage]) -> tuple[Any, ...]:
    return (
        sorted({r.queue_id for r in rows}),
        [r.queue_id for r in rows],
        [r.priority for r in rows],
        [r.ttl_ms for r in rows],
        [r.exchange for r in rows],
        [r.routing_key for r in rows],
        [r.properties for r in rows],
        [r.body for r in rows],
        [r.body_key for r in rows],
        [r.body_size for r in rows],
        CHANNEL,
    )


async def _refused(
    tx: Transaction, rows: Sequence[NewMessage], limits: dict[int, tuple[int | None, int | None]]
) -> set[int]:
    """The indexes of the rows their ``reject-publish(-dlx)`` queue refuses: taken in order
    while the queue's ready, unexpired rows stay within its limits (the queue row is locked)."""
    checked = sorted({r.queue_id for r in rows if r.limited and r.overflow != DROP_HEAD}
                     & limits.keys())  # fmt: skip
    if not checked:
        return set()
    held: dict[int, list[int]] = {q: [0, 0] for q in checked}
    for queue_id, count, size in await tx.fetchall(
        "SELECT queue_id, count(*), coalesce(sum(coalesce(body_size, length(body))), 0)"
        "  FROM amqp_messages"
        " WHERE queue_id = ANY(%s) AND claimed_epoch IS NULL AND (expires_at IS NULL"
        "       OR expires_at > (extract(epoch FROM clock_timestamp()) * 1000)::bigint)"
        " GROUP BY queue_id",
        (checked,),
    ):
        held[int(queue_id)] = [int(count), int(size)]
    refused: set[int] = set()
    for i, row in enumerate(rows):
        now = held.get(row.queue_id)
        if now is None:
            continue
        max_length, max_bytes = limits[row.queue_id]
        size = row.size
        if (max_length is not None and now[0] >= max_length) or (
            max_bytes is not None and now[1] + size > max_bytes
        ):
            refused.add(i)
        else:
            now[0] += 1
            now[1] += size
    return refused


async def _trim(
    tx: Transaction, queue_id: int, routing: DeadLetterRouting | None, hops: int
) -> None:
    """Drop-head: delete the ready rows nearest the head beyond the queue's x-max-length or
    x-max-length-bytes, counted from the tail (ready rows only, as RabbitMQ counts); with
    ``routing``, dead-lettered (reason maxlen)."""
    await _remove(
        tx,
        "m.claimed_epoch IS NULL AND m.seq IN ("
        " SELECT t.seq FROM ("
        "   SELECT r.seq, row_number() OVER w AS n,"
        "          sum(coalesce(r.body_size, length(r.body))) OVER w AS bytes"
        "     FROM amqp_messages r WHERE r.queue_id = %s AND r.claimed_epoch IS NULL"
        "   WINDOW w AS (ORDER BY r.priority, r.seq DESC)) t, amqp_queues q"
        "  WHERE q.id = %s AND (t.n > q.max_length OR t.bytes > q.max_length_bytes))",
        (queue_id, queue_id),
        "maxlen",
        routing,
        hops,
        queue_id,
    )


_NOW_MS = "(extract(epoch FROM statement_timestamp()) * 1000)::bigint"
EXPIRED = f"m.claimed_epoch IS NULL AND m.expires_at <= {_NOW_MS}"
"""The rows ``m`` that expired while ready (their claim skips them, the sweep removes them).
The time is the statement's start, a stable value, so the expiry index can find them (a
comparison with ``clock_timestamp()``, volatile, can only be checked row by row: the sweep
read the whole table every second)."""
_OVER_LIMIT = (
    "m.seq = ANY(%s) AND m.delivery_count >"
    " (SELECT q.delivery_limit FROM amqp_queues q WHERE q.id = m.queue_id)"
)


async def _remove(
    tx: Transaction,
    where: str,
    params: tuple[Any, ...],
    reason: str,
    routing: DeadLetterRouting | None,
    hops: int = 0,
    queue_id: int | None = None,
) -> int:
    """Delete the rows ``m`` of ``amqp_messages`` that match ``where``, one of this module's
    conditions (never client input: the values are in ``params``); returns how many.
    ``queue_id``: they are all of that queue. With ``routing``, those of queues with a
    dead-letter exchange are dead-lettered for ``reason`` in ``tx``, and those of queues the
    node does not know are left."""
    if routing is None:
        return await tx.execute(f"DELETE FROM amqp_messages m WHERE {where}", params)  # noqa: S608
    if queue_id is None:
        queues = [int(q[0]) for q in await tx.fetchall(
            f"SELECT DISTINCT m.queue_id FROM amqp_messages m WHERE {where}", params  # noqa: S608
        )]  # fmt: skip
    else:
        queues = [queue_id]
    policy = {q: routing.dead_letters(q) for q in queues}
    dropped = [q for q, dead_letters in policy.items() if dead_letters is False]
    moved = [q for q, dead_letters in policy.items() if dead_letters]
    count = 0
    if dropped:
        count += await tx.execute(
            f"DELETE FROM amqp_messages m WHERE ({where}) AND m.queue_id = ANY(%s)",  # noqa: S608
            (*params, dropped),
        )
    if moved:
        gone = await tx.fetchall(
            f"DELETE FROM amqp_messages m WHERE ({where}) AND m.queue_id = ANY(%s)"  # noqa: S608
            " RETURNING m.seq, m.queue_id, m.exchange, m.routing_key, m.properties, m.body,"
            "           m.body_key, m.body_size",
            (*params, moved),
        )
        count += len(gone)
        gone.sort(key=lambda r: int(r[0]))
        await _insert_copies(tx, [
            DeadMessage(int(r[1]), str(r[2]), str(r[3]), bytes(r[4]), bytes(r[5]), reason,
                        r[6], None if r[7] is None else int(r[7]))
            for r in gone
        ], routing, hops)  # fmt: skip
    return count


async def _insert_copies(
    tx: Transaction, dead: list[DeadMessage], routing: DeadLetterRouting, hops: int
) -> None:
    """Insert the dead-lettered copies of ``dead`` (as the node routes them) in ``tx``."""
    if hops >= MAX_DEAD_LETTER_HOPS:
        log.warning("%d dead-lettered messages dropped after %d hops in one transaction",
                    len(dead), hops)  # fmt: skip
        return
    copies = [row for message in dead for row in routing.route(message)]
    if copies:
        await insert_messages(tx, copies, routing, hops=hops + 1)


@dataclass(slots=True)
class _Publish:
    rows: Sequence[NewMessage]
    held: Sequence[NewHeld]
    size: int
    done: asyncio.Future[bool]
    keys: list[str] = field(default_factory=list)  # body objects its rows name
    upload: asyncio.Task[None] | None = None  # PUT of its body, before its transaction


async def _commit(
    tx: Transaction,
    rows: Sequence[NewMessage],
    held: Sequence[NewHeld],
    keys: Sequence[str],
    routing: DeadLetterRouting | None,
) -> list[bool]:
    await register_keys(tx, keys)
    taken = await insert_messages(tx, rows, routing) if rows else []
    await insert_held(tx, held)
    return taken


class MessageWriter:
    """Group-commits the publishes of one node; see the module docstring. With ``routing``,
    what a full queue refuses (``reject-publish-dlx``) or drops (drop-head) is dead-lettered.
    With ``bodies``, a body above its threshold is PUT first and the rows name its object;
    publishes still commit in the order they came (a batch stops before one whose PUT is not
    done)."""

    def __init__(
        self,
        db: Database,
        routing: DeadLetterRouting | None = None,
        bodies: Bodies | None = None,
    ) -> None:
        self._db = db
        self._routing = routing
        self._bodies = bodies
        self._pending: list[_Publish] = []
        self._task: asyncio.Task[None] | None = None
        self.transactions = 0  # committed, for tests and benchmarks

    def publish(
        self, rows: Sequence[NewMessage], held: Sequence[NewHeld] = ()
    ) -> asyncio.Future[bool]:
        """Queue ``rows`` (and ``held``, rows of delayed exchanges) for the next transaction;
        the future resolves after its commit, to whether every row's queue took it (False: a
        full ``reject-publish(-dlx)`` queue refused its row, the others went in), or to
        ``StorageError`` when it failed (nothing, or with ``outcome_unknown`` maybe all, of it
        was written). The rows of one publish share one body."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[bool] = loop.create_future()
        body = rows[0].body if rows else held[0].body if held else b""
        size = sum(len(r.body) + len(r.properties) for r in rows)
        publish = _Publish(rows, held, size, done)
        if self._bodies is not None and self._bodies.offloads(body):
            publish.size = sum(len(r.properties) for r in rows)
            publish.upload = loop.create_task(self._offload(publish, self._bodies, body))
        self._pending.append(publish)
        if self._task is None:
            self._task = loop.create_task(self._run(), name="wharf amqp publishes")
        return done

    @staticmethod
    async def _offload(publish: _Publish, bodies: Bodies, body: bytes) -> None:
        key = await bodies.put(body)
        size = len(body)
        publish.rows = [replace(r, body=b"", body_key=key, body_size=size) for r in publish.rows]
        publish.held = [replace(h, body=b"", body_key=key, body_size=size) for h in publish.held]
        publish.keys = [key]

    async def _run(self) -> None:
        try:
            while self._pending:
                head = self._pending[0]
                if head.upload is not None:
                    await asyncio.wait([head.upload])
                batch = []
                for publish in self._take():
                    failed = publish.upload.exception() if publish.upload else None
                    if failed is None:
                        batch.append(publish)
                    elif not publish.done.done():
                        publish.done.set_exception(failed)
                if not batch:
                    continue
                rows = [row for publish in batch for row in publish.rows]
                held = [row for publish in batch for row in publish.held]
                keys = [key for publish in batch for key in publish.keys]
                try:
                    taken = await self._commit(rows, held, keys)
                except Exception as exc:  # every failure must reach its publishers
                    for publish in batch:
                        if not publish.done.done():
                            publish.done.set_exception(exc)
                    continue
                self.transactions += 1
                start = 0
                for publish in batch:
                    end = start + len(publish.rows)
                    if not publish.done.done():
                        publish.done.set_result(all(taken[start:end]))
                    start = end
        finally:
            self._task = None

    async def _commit(
        self, rows: list[NewMessage], held: list[NewHeld], keys: list[str]
    ) -> list[bool]:
        """Commit one batch; per row, whether its queue took it."""
        if held or keys or any(r.limited for r in rows):
            return await self._db.run(
                partial(_commit, rows=rows, held=held, keys=keys, routing=self._routing),
                "amqp.publish", retries=_RETRIES, lazy_begin=True,
            )  # fmt: skip
        # the common batch, rows of queues without limits: its insert alone, one round trip
        await self._db.statement(_INSERT, _insert_params(rows), "amqp.publish", retries=_RETRIES)
        return [True] * len(rows)

    def _take(self) -> list[_Publish]:
        """The publishes of the next transaction: in order, up to the batch's bounds, and
        stopping before one whose body is still being written."""
        taken: list[_Publish] = []
        rows = size = 0
        while self._pending:
            head = self._pending[0]
            if taken and (rows + len(head.rows) > _MAX_BATCH_ROWS
                          or size + head.size > _MAX_BATCH_BYTES
                          or (head.upload is not None and not head.upload.done())):  # fmt: skip
                break
            taken.append(self._pending.pop(0))
            rows += len(head.rows) + len(head.held)
            size += head.size
        return taken

    async def close(self) -> None:
        """Wait for the publishes queued so far to be committed (or fail)."""
        while self._task is not None:
            await asyncio.shield(self._task)


# The claim, in one statement: the lease check (rule 5: checked and share-locked), the
# claiming epoch recorded (for the sweep), the claim (only while the single active consumer it
# is for, if any, is still the active one). The rows picked are handed to the update as an
# array, which it looks up by primary key: as `seq IN (subquery)`, PostgreSQL may join them
# against a sequential scan of the whole table.
CLAIM_STATEMENT: LiteralString = (
    "WITH lease AS (SELECT 1 FROM nodes WHERE id = %(node)s AND epoch = %(epoch)s"
    "                  AND lease_expires_at > clock_timestamp() FOR KEY SHARE),"
    " epochs AS (INSERT INTO amqp_claim_epochs (epoch, node_id)"
    "             SELECT %(epoch)s, %(node)s WHERE EXISTS (SELECT 1 FROM lease)"
    "            ON CONFLICT (epoch) DO NOTHING),"
    " claimed AS ("
    "  UPDATE amqp_messages SET claimed_node = %(node)s, claimed_epoch = %(epoch)s,"
    "                           claim_token = %(token)s"
    "   WHERE EXISTS (SELECT 1 FROM lease)"
    "     AND (%(consumer)s::bigint IS NULL OR EXISTS (SELECT 1 FROM amqp_consumers"
    "                                         WHERE id = %(consumer)s AND active))"
    "     AND ctid = ANY(ARRAY(SELECT ctid FROM amqp_messages"
    "                  WHERE queue_id = %(queue)s AND claimed_epoch IS NULL"
    "                    AND (expires_at IS NULL OR expires_at >"
    "                         (extract(epoch FROM clock_timestamp()) * 1000)::bigint)"
    "                  ORDER BY priority DESC, seq LIMIT %(count)s FOR UPDATE SKIP LOCKED))"
    "  RETURNING seq, priority, expires_at, delivery_count, exchange, routing_key,"
    "            properties, body, body_key)"
    " SELECT (SELECT count(*) FROM lease), c.* FROM (SELECT 1) one"
    "   LEFT JOIN claimed c ON true"
)
"""Parameters by name: ``node``, ``epoch``, ``token``, ``consumer`` (the single active
consumer's id; None: any consumer), ``queue`` (id), ``count``. The update finds the rows the
subquery locked by their ``ctid`` (a row locked by this transaction stays where it is until
the update), a tuple-id read instead of a primary-key lookup per row."""

DELETE_STATEMENT: LiteralString = (
    "WITH lease AS (SELECT 1 FROM nodes WHERE id = %(node)s AND epoch = %(epoch)s"
    "                  AND lease_expires_at > clock_timestamp() FOR KEY SHARE),"
    " deleted AS (DELETE FROM amqp_messages m"
    "              USING unnest(%(firsts)s::bigint[], %(lasts)s::bigint[]) AS r(first, last)"
    "              WHERE EXISTS (SELECT 1 FROM lease) AND m.seq BETWEEN r.first AND r.last"
    "                AND m.claimed_node = %(node)s AND m.claimed_epoch = %(epoch)s)"
    " SELECT count(*) FROM lease"
)
"""Settled rows deleted (acks), in one statement checking the lease (rule 5) as the claim
does: one row, 0 when the lease is gone (and nothing was deleted). The rows are named by runs
of consecutive ``seq`` (:func:`seq_runs`): a consumer acks in delivery order, so a batch of
hundreds of acks is a run or a few, each one range read of the primary key (2.5 times cheaper
for PostgreSQL than a lookup per row, and less for the node to send)."""

DELETE_PLANNER_SETTINGS: StatementSettings = (("enable_seqscan", "off"),)
"""What :data:`DELETE_STATEMENT` runs with: without it, PostgreSQL's generic
plan for a prepared statement joins the runs against a sequential scan of the whole table
(it cannot know that the runs are short)."""


def seq_runs(seqs: Iterable[int]) -> tuple[list[int], list[int]]:
    """The first and last ``seq`` of each run of consecutive values in ``seqs`` (sorted;
    duplicates count once): ``[5, 1, 2, 3, 9]`` gives ``([1, 5, 9], [3, 5, 9])``."""
    firsts: list[int] = []
    lasts: list[int] = []
    last = None
    for seq in sorted(seqs):
        if last is not None and seq <= last + 1:
            lasts[-1] = last = seq
            continue
        firsts.append(seq)
        lasts.append(seq)
        last = seq
    return firsts, lasts

CLAIM_PLANNER_SETTINGS: StatementSettings = (("enable_sort", "off"),)
"""What :data:`CLAIM_STATEMENT` runs with. A queue table filled after
PostgreSQL last analyzed it looks nearly empty to the planner, which then reads every ready
row by a bitmap scan and sorts them; a plan without a sort walks the ready index from its
head and stops at the limit (1.6 ms instead of 78 ms for 200 rows out of 50,000)."""


async def claim(
    db: Database,
    lease: NodeLease,
    queue_id: int,
    count: int,
    token: int = 0,
    routing: DeadLetterRouting | None = None,
    consumer: int | None = None,
) -> list[ClaimedMessage]:
    """Claim up to ``count`` ready rows of the queue for ``lease``, in delivery order
    (priority descending, then ``seq``); ``LeaseLostError`` without a live lease. The rows
    carry ``token``: when the commit's outcome is unknown, :func:`claimed_with` finds what it
    claimed, if it did. With ``routing`` (a queue with a dead-letter exchange), the queue's
    expired ready rows are dead-lettered first, in the same transaction. With ``consumer`` (a
    single-active-consumer queue) nothing is claimed unless that registered consumer is the
    queue's active one."""

    params = {"node": lease.node_id, "epoch": lease.epoch, "token": token,
              "consumer": consumer, "queue": queue_id, "count": count}  # fmt: skip

    async def body(tx: Transaction) -> list[tuple[Any, ...]]:
        await check_lease(tx, lease, db.name)
        await _remove(tx, f"m.queue_id = %s AND {EXPIRED}", (queue_id,), "expired",
                      routing, queue_id=queue_id)  # fmt: skip
        await tx.set_local(CLAIM_PLANNER_SETTINGS)
        return await tx.fetchall(CLAIM_STATEMENT, params)

    if routing is None:  # the claim alone: one round trip
        rows = await db.statement(
            CLAIM_STATEMENT, params, "amqp.claim", settings=CLAIM_PLANNER_SETTINGS,
            retries=_RETRIES,
        )  # fmt: skip
    else:
        rows = await db.run(body, "amqp.claim", retries=_RETRIES)
    if not rows or not rows[0][0]:
        raise LeaseLostError(
            db.name,
            f"node {lease.node_id}: the lease of epoch {lease.epoch} expired or was replaced",
        )
    epoch = lease.epoch
    claimed = [
        ClaimedMessage(r[1], r[2], r[3], r[4], r[5], r[6], bytes(r[7]), bytes(r[8]), epoch, r[9])
        for r in rows
        if r[1] is not None
    ]
    claimed.sort(key=_delivery_order)
    return claimed


def _delivery_order(message: ClaimedMessage) -> tuple[int, int]:
    return -message.priority, message.seq


async def claimed_with(
    db: Database, lease: NodeLease, queue_id: int, token: int
) -> list[ClaimedMessage]:
    """The rows of the queue a claim with ``token`` by ``lease`` holds (after a claim whose
    commit outcome was unknown: none if it did not commit), in delivery order."""
    async with db.transaction("amqp.claimed_with") as tx:
        rows = await tx.fetchall(
            "SELECT seq, priority, expires_at, delivery_count, exchange, routing_key,"
            "       properties, body, body_key FROM amqp_messages"
            " WHERE queue_id = %s AND claimed_node = %s AND claimed_epoch = %s"
            "   AND claim_token = %s ORDER BY priority DESC, seq",
            (queue_id, lease.node_id, lease.epoch, token),
        )
    return [
        ClaimedMessage(
            int(r[0]), int(r[1]), None if r[2] is None else int(r[2]), int(r[3]),
            str(r[4]), str(r[5]), bytes(r[6]), bytes(r[7]), lease.epoch, r[8],
        )  # fmt: skip
        for r in rows
    ]


async def ready_count(db: Database, queue_id: int) -> int:
    """Unclaimed rows of the queue (what queue.declare-ok reports)."""
    async with db.transaction("amqp.ready_count") as tx:
        count = await tx.fetchval(
            "SELECT count(*) FROM amqp_messages WHERE queue_id = %s AND claimed_epoch IS NULL",
            (queue_id,),
        )
    return int(count or 0)


async def purge(db: Database, queue_id: int) -> int:
    """Delete the queue's unclaimed rows; returns how many."""
    async with db.transaction("amqp.purge") as tx:
        return await tx.execute(
            "DELETE FROM amqp_messages WHERE queue_id = %s AND claimed_epoch IS NULL",
            (queue_id,),
        )


async def _drop_over_limit(
    tx: Transaction, returned: list[int], routing: DeadLetterRouting | None
) -> None:
    """Delete the returned rows whose queue's x-delivery-limit they now exceed: dead-lettered
    (reason delivery_limit) with ``routing`` and a dead-letter exchange, else dropped."""
    if returned:
        await _remove(tx, _OVER_LIMIT, (returned,), "delivery_limit", routing)


@dataclass(slots=True)
class _EpochSettlements:
    deletes: list[int] = field(default_factory=list)
    dead: dict[str, list[int]] = field(default_factory=dict)  # reason -> rows dead-lettered
    returns: list[int] = field(default_factory=list)  # delivered: delivery_count + 1
    unclaims: list[int] = field(default_factory=list)  # never handed out: count unchanged


class Settler:
    """Batches one node's settlements; see the module docstring. Settlements are never
    waited on (AMQP acks have no answer); one that cannot commit leaves its rows claimed, and
    the sweep returns them once the epoch is dead."""

    def __init__(
        self, db: Database, node_id: str, retry_interval: float = 0.5,
        routing: DeadLetterRouting | None = None,
    ) -> None:  # fmt: skip
        self._db = db
        self._node_id = node_id
        self._routing = routing
        self._retry_interval = retry_interval
        self._pending: dict[int, _EpochSettlements] = {}
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._waiters: list[asyncio.Future[None]] = []  # for drained(), of the next batch
        self.fenced = 0  # settlements refused because their epoch's lease was gone
        self.retries = 0  # batches tried again after a database failure

    def delete(self, epoch: int, seqs: Iterable[int]) -> None:
        self._at(epoch).deletes.extend(seqs)
        self._kick()

    def dead_letter(self, epoch: int, seqs: Iterable[int], reason: str) -> None:
        """Delete the rows, dead-lettering them for ``reason`` (with the settler's routing)."""
        self._at(epoch).dead.setdefault(reason, []).extend(seqs)
        self._kick()

    def release(self, epoch: int, seqs: Iterable[int], *, delivered: bool) -> None:
        pending = self._at(epoch)
        (pending.returns if delivered else pending.unclaims).extend(seqs)
        self._kick()

    def _at(self, epoch: int) -> _EpochSettlements:
        pending = self._pending.get(epoch)
        if pending is None:
            pending = self._pending[epoch] = _EpochSettlements()
        return pending

    def _kick(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="wharf amqp settlements"
            )

    async def _run(self) -> None:
        try:
            while self._pending:
                batches, self._pending = self._pending, {}
                waiters, self._waiters = self._waiters, []
                failed = False
                for epoch, batch in batches.items():
                    if not await self._commit(epoch, batch) and not self._closing:
                        self._merge_back(epoch, batch)
                        failed = True
                if failed:
                    self._waiters[:0] = waiters
                    self.retries += 1
                    await asyncio.sleep(self._retry_interval)
                else:
                    _wake(waiters)
        finally:
            self._task = None
            _wake(self._waiters)
            self._waiters = []

    async def drained(self) -> None:
        """Return once the settlements queued before this call are done with (committed, or
        refused by their lease), however many come after them."""
        if self._task is None:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        await asyncio.shield(waiter)

    def _merge_back(self, epoch: int, batch: _EpochSettlements) -> None:
        """A batch that did not commit goes back in front of what came since."""
        later = self._pending.get(epoch)
        self._pending[epoch] = batch
        if later is not None:
            batch.deletes.extend(later.deletes)
            for reason, seqs in later.dead.items():
                batch.dead.setdefault(reason, []).extend(seqs)
            batch.returns.extend(later.returns)
            batch.unclaims.extend(later.unclaims)

    async def _commit(self, epoch: int, batch: _EpochSettlements) -> bool:
        """Whether the batch is done with (committed, or refused for good by its lease)."""
        lease = NodeLease(self._node_id, epoch)
        only_deletes = not (batch.dead or batch.returns or batch.unclaims)

        async def body(tx: Transaction) -> None:
            await check_lease(tx, lease, self._db.name)
            if batch.deletes:
                await tx.execute(
                    "DELETE FROM amqp_messages WHERE seq = ANY(%s)"
                    "   AND claimed_node = %s AND claimed_epoch = %s",
                    (batch.deletes, self._node_id, epoch),
                )
            for reason, seqs in batch.dead.items():
                await _remove(
                    tx, "m.seq = ANY(%s) AND m.claimed_node = %s AND m.claimed_epoch = %s",
                    (seqs, self._node_id, epoch), reason, self._routing,
                )  # fmt: skip
            back = batch.returns + batch.unclaims
            if back:
                queues = await tx.fetchall(
                    "UPDATE amqp_messages SET claimed_node = NULL, claimed_epoch = NULL,"
                    "       delivery_count = delivery_count"
                    "                        + CASE WHEN seq = ANY(%s) THEN 1 ELSE 0 END"
                    " WHERE seq = ANY(%s) AND claimed_node = %s AND claimed_epoch = %s"
                    " RETURNING queue_id",
                    (batch.returns, back, self._node_id, epoch),
                )
                if batch.returns:
                    await _drop_over_limit(tx, batch.returns, self._routing)
                await _notify(tx, (int(q[0]) for q in queues))

        try:
            if only_deletes:  # acks alone, the common case: one round trip
                firsts, lasts = seq_runs(batch.deletes)
                [(held,)] = await self._db.statement(
                    DELETE_STATEMENT, {"node": self._node_id, "epoch": epoch,
                                       "firsts": firsts, "lasts": lasts},
                    "amqp.settle", settings=DELETE_PLANNER_SETTINGS, retries=_RETRIES,
                )  # fmt: skip
                if not held:
                    raise LeaseLostError(self._db.name, f"the lease of epoch {epoch} is gone")
            else:
                await self._db.run(body, "amqp.settle", retries=_RETRIES)
        except LeaseLostError:
            self.fenced += len(batch.deletes) + len(batch.returns) + len(batch.unclaims)
            self.fenced += sum(len(seqs) for seqs in batch.dead.values())
            log.info("settlements of epoch %d not committed: its lease is gone", epoch)
        except DatabaseError as exc:
            log.warning("settlements of epoch %d not committed, trying again: %s", epoch, exc)
            return False
        return True

    async def close(self) -> None:
        """Wait for the settlements queued so far to be committed, or tried once more (what
        still fails is left to the sweep, once this epoch is over)."""
        self._closing = True
        while self._task is not None:
            await asyncio.shield(self._task)


def _wake(waiters: list[asyncio.Future[None]]) -> None:
    for waiter in waiters:
        if not waiter.done():
            waiter.set_result(None)


@dataclass(frozen=True, slots=True)
class SweepResult:
    """``swept`` False: another node was sweeping."""

    swept: bool
    released: int = 0
    queues_deleted: int = 0
    expired: int = 0
    consumers: SweptConsumers = field(default_factory=SweptConsumers)


async def sweep(
    db: Database, lease: NodeLease, routing: DeadLetterRouting | None = None
) -> SweepResult:
    """One sweep (see the module docstring), fenced on ``lease``; with ``routing``, what it
    deletes from a queue with a dead-letter exchange (over the delivery limit, expired) is
    dead-lettered."""

    async def body(tx: Transaction) -> SweepResult:
        await check_lease(tx, lease, db.name)
        if not await tx.fetchval("SELECT pg_try_advisory_xact_lock(%s)", (_SWEEP_LOCK,)):
            return SweepResult(False)
        t = await tx.fetchval("SELECT clock_timestamp()")
        await tx.fetchall(
            "SELECT 1 FROM nodes WHERE lease_expires_at <= %s FOR UPDATE", (t,)
        )
        dead = [int(r[0]) for r in await tx.fetchall(
            "SELECT c.epoch FROM amqp_claim_epochs c WHERE NOT EXISTS ("
            "       SELECT 1 FROM nodes n WHERE n.id = c.node_id"
            "          AND n.epoch = c.epoch AND n.lease_expires_at > %s)",
            (t,),
        )]  # fmt: skip
        released: list[tuple[Any, ...]] = []
        if dead:  # rare (a node died or lost its lease): a scan of the table is fine
            released = await tx.fetchall(
                "UPDATE amqp_messages SET claimed_node = NULL, claimed_epoch = NULL,"
                "       delivery_count = delivery_count + 1"
                " WHERE claimed_epoch = ANY(%s) RETURNING queue_id, seq",
                (dead,),
            )
            await tx.execute("DELETE FROM amqp_claim_epochs WHERE epoch = ANY(%s)", (dead,))
        await _drop_over_limit(tx, [int(r[1]) for r in released], routing)
        dead_queues = await tx.fetchall(
            "DELETE FROM amqp_queues q WHERE owner_epoch IS NOT NULL AND NOT EXISTS ("
            "       SELECT 1 FROM nodes n WHERE n.id = q.owner_node"
            "          AND n.epoch = q.owner_epoch AND n.lease_expires_at > %s)"
            " RETURNING id, vhost, name",
            (t,),
        )
        for queue_id, vhost, name in dead_queues:
            await tx.execute("DELETE FROM amqp_messages WHERE queue_id = %s", (queue_id,))
            await tx.execute(
                "DELETE FROM amqp_bindings WHERE vhost = %s AND kind = 'queue'"
                "   AND destination = %s",
                (vhost, name),
            )
        for vhost in sorted({str(r[1]) for r in dead_queues}):
            await tx.execute("SELECT pg_notify('wharf_amqp_definitions', %s)", (vhost,))
        expired = await _remove(tx, EXPIRED, (), "expired", routing)
        await _notify(tx, (int(r[0]) for r in released))
        consumers = await sweep_consumers(tx, t)
        return SweepResult(True, len(released), len(dead_queues), expired, consumers)

    return await db.run(body, "amqp.sweep", retries=_RETRIES)
