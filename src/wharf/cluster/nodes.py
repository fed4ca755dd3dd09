"""Node identity and cluster membership, on leases kept by the database's clock.

Identity: a node's id is generated once (a random UUID) and kept in ``<data-dir>/node-id``,
written atomically (:func:`wharf.storage.checkpoint.replace_file`); every restart on that data
dir is the same node. An operator may write a name of their own there instead.

Membership: a starting node registers (:meth:`Membership.register`): it upserts its ``nodes`` row
(advertised host, listeners as JSON ``{name: port}``, ``started_at``, ``last_heartbeat``,
``lease_expires_at``) with a new **epoch**, drawn from a sequence, so that no two registrations
ever share one, even across deleted rows. Then it heartbeats every ``heartbeat_interval``: each
heartbeat moves ``lease_expires_at`` to ``clock_timestamp() + lease_duration``, but only while
the row still carries its epoch and the lease has not expired. All times are the database's
(``clock_timestamp()``), never the node's: nodes' clocks may disagree, the database's is one.

Kafka clients name brokers by a 32-bit number: :func:`broker_id` gives each node id one, kept in
``cluster_broker_ids`` (migration 3) so that a node keeps it across restarts, and
:func:`registered_nodes` lists the ``nodes`` rows with their broker ids and whether their lease
is live, in one query (what the server refreshes its live brokers from, and what ``wharf cluster
status`` and ``/api/cluster`` show). :func:`cluster_id` is the id Kafka clients see, drawn once
by migration 3.

A lease that expired is over for good: the heartbeat that finds it so raises
:class:`LeaseLostError` and the node must drop everything it did on that authority and
register again (a new epoch). Other nodes treat a node whose lease expired as dead:
:func:`live_nodes` lists only unexpired leases. A clean shutdown deletes the row
(:meth:`Membership.deregister`).

The node's own view, :meth:`Membership.holds_lease`, is conservative: the lease is taken to end
``lease_duration`` after the *sending* of the last successful heartbeat (measured on the node's
monotonic clock), never later than the database's expiry, which was computed after that send.
Work that is not checked in the database (serving from a cache) stops there.

Fencing (issue 10): the fencing token is ``(node id, epoch)``. Every write made on the authority
of a lease (this membership, and later the group-coordinator, claim and sweep leases, which
follow the same pattern) checks the lease *in the same transaction*, and locks it::

    SELECT 1 FROM nodes
     WHERE id = %s AND epoch = %s AND lease_expires_at > clock_timestamp()
       FOR KEY SHARE

``clock_timestamp()``, not ``now()``: ``now()`` is the transaction's start, and would let a
transaction begun before the expiry pass the check after it. The lock matters as much as the
check: whoever takes over a dead node's authority first locks its row ``FOR UPDATE`` and
verifies ``lease_expires_at <= clock_timestamp()`` in *its* transaction (then deletes the row or
moves the authority), and a node registering again (a new epoch) locks its row ``FOR UPDATE``
before replacing the epoch. ``FOR UPDATE`` conflicts with ``FOR KEY SHARE``, so a fenced write
either commits before the takeover or the new epoch reads the row, or waits and then finds no
lease. A heartbeat, which only moves the lease's end later, takes the weaker lock of an
``UPDATE`` of non-key columns, which ``FOR KEY SHARE`` does not block: with ``FOR SHARE`` each
heartbeat waited for the node's open fenced transactions and every new one queued behind it.
A node paused (SIGSTOP, GC, cut off) in the middle of such a transaction holds the takeover up
only until the server ends its idle session (``DatabaseSettings.idle_in_transaction_timeout``),
which rolls its writes back.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from wharf.cluster.database import Database, DatabaseError
from wharf.errors import StorageError
from wharf.storage.checkpoint import replace_file

__all__ = [
    "NODE_ID_FILE",
    "LeaseLostError",
    "Membership",
    "MembershipSettings",
    "NodeInfo",
    "RegisteredNode",
    "broker_id",
    "cluster_id",
    "live_nodes",
    "load_node_id",
    "registered_nodes",
]

NODE_ID_FILE = "node-id"
_NODE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_log = logging.getLogger(__name__)


class LeaseLostError(DatabaseError):
    """The node's lease expired or was replaced by a newer registration: nothing may be done
    on its authority any more."""


def load_node_id(data_dir: str | os.PathLike[str]) -> str:
    """The node id kept in ``data_dir``, generated and written there the first time (blocks
    on the disk). ``StorageError`` names the file when it cannot be read or written, or holds
    no valid id (letters, digits, ``.``, ``_``, ``-``; at most 63 characters)."""
    path = Path(data_dir) / NODE_ID_FILE
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        node_id = str(uuid.uuid4())
        try:
            os.makedirs(path.parent, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {path.parent}: {exc}", errno=exc.errno) from exc
        replace_file(path, f"{node_id}\n".encode("ascii"))
        return node_id
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}", errno=exc.errno) from exc
    except UnicodeDecodeError as exc:
        raise StorageError(f"{path} does not hold a node id: {exc}") from exc
    if not _NODE_ID.fullmatch(text):
        raise StorageError(f"{path} does not hold a node id: {text[:80]!r}")
    return text


@dataclass(frozen=True)
class MembershipSettings:
    """Seconds. A node missing heartbeats for ``lease_duration`` is dead to the others."""

    heartbeat_interval: float = 1.0
    lease_duration: float = 5.0

    def __post_init__(self) -> None:
        if self.heartbeat_interval <= 0 or self.lease_duration <= self.heartbeat_interval:
            raise ValueError(
                "the lease must be longer than the heartbeat interval, both positive: "
                f"interval {self.heartbeat_interval} s, lease {self.lease_duration} s"
            )


@dataclass(frozen=True)
class NodeInfo:
    """One ``nodes`` row."""

    id: str
    epoch: int
    host: str
    listeners: dict[str, int]
    started_at: datetime
    last_heartbeat: datetime
    lease_expires_at: datetime


async def live_nodes(db: Database) -> list[NodeInfo]:
    """The nodes whose lease has not expired, by id."""
    async with db.transaction("nodes.live") as tx:
        rows = await tx.fetchall(
            "SELECT id, epoch, host, listeners, started_at, last_heartbeat, lease_expires_at"
            "  FROM nodes WHERE lease_expires_at > clock_timestamp() ORDER BY id"
        )
    return [
        NodeInfo(r[0], r[1], r[2], {str(k): int(v) for k, v in r[3].items()}, r[4], r[5], r[6])
        for r in rows
    ]


@dataclass(frozen=True)
class RegisteredNode:
    """A ``nodes`` row with its Kafka broker id (``None`` if it never asked for one) and whether
    its lease is unexpired by the database's clock."""

    info: NodeInfo
    broker_id: int | None
    live: bool
    routable: bool = False
    """Live, connected to the database (a session named after it), and heartbeating on time:
    clients may be sent to it. A node killed with -9 loses its sessions at once and stops being
    routable long before its lease (the fence) expires."""


async def registered_nodes(
    db: Database, *, heartbeat_grace: float | None = None
) -> list[RegisteredNode]:
    """Every registered node, live or not (a dead node's row stays until it registers again or
    is taken over), by id. ``routable`` also needs a session of the node in
    ``pg_stat_activity`` and, with ``heartbeat_grace``, a heartbeat at most that many seconds
    old (routing only: fencing goes by the lease alone)."""
    async with db.transaction("nodes.registered") as tx:
        rows = await tx.fetchall(
            "SELECT n.id, n.epoch, n.host, n.listeners, n.started_at, n.last_heartbeat,"
            "       n.lease_expires_at, b.broker_id, n.lease_expires_at > clock_timestamp(),"
            "       EXISTS (SELECT 1 FROM pg_stat_activity a"
            "                WHERE a.application_name = left('wharf ' || n.id, 63))"
            "       AND (%s::float8 IS NULL OR n.last_heartbeat"
            "            > clock_timestamp() - make_interval(secs => %s::float8))"
            "  FROM nodes n LEFT JOIN cluster_broker_ids b ON b.node_id = n.id"
            " ORDER BY n.id",
            (heartbeat_grace, heartbeat_grace),
        )
    return [
        RegisteredNode(
            NodeInfo(r[0], r[1], r[2], {str(k): int(v) for k, v in r[3].items()}, r[4], r[5], r[6]),
            None if r[7] is None else int(r[7]),
            bool(r[8]),
            bool(r[8]) and bool(r[9]),
        )
        for r in rows
    ]


async def broker_id(db: Database, node_id: str) -> int:
    """The Kafka broker id of ``node_id``, given on its first call and the same ever after."""
    async with db.transaction("nodes.broker_id") as tx:
        known = await tx.fetchval(
            "SELECT broker_id FROM cluster_broker_ids WHERE node_id = %s", (node_id,)
        )
        if known is None:
            # Two starts of one node id racing: the second waits on the first's row, inserts
            # nothing, and the SELECT after it (a new snapshot) sees the committed id.
            await tx.execute(
                "INSERT INTO cluster_broker_ids (node_id) VALUES (%s)"
                " ON CONFLICT (node_id) DO NOTHING",
                (node_id,),
            )
            known = await tx.fetchval(
                "SELECT broker_id FROM cluster_broker_ids WHERE node_id = %s", (node_id,)
            )
    return int(known)


async def cluster_id(db: Database) -> str:
    """The cluster's id, as Kafka clients are told it (drawn once, by migration 3)."""
    async with db.transaction("nodes.cluster_id") as tx:
        return str(await tx.fetchval("SELECT cluster_id FROM cluster_info"))


class Membership:
    """This node's registration, its heartbeats and its view of its own lease."""

    def __init__(
        self,
        db: Database,
        node_id: str,
        host: str,
        listeners: Mapping[str, int],
        settings: MembershipSettings | None = None,
    ) -> None:
        self.db = db
        self.node_id = node_id
        self.host = host
        self.listeners = dict(listeners)
        self.settings = settings or MembershipSettings()
        self.epoch: int | None = None
        """This registration's epoch (``None`` before :meth:`register`, after a loss)."""
        self._valid_until = 0.0
        self._heartbeats: asyncio.Task[None] | None = None

    def holds_lease(self) -> bool:
        """Whether the lease is certainly still valid (see the module docstring)."""
        return self.epoch is not None and time.monotonic() < self._valid_until

    async def register(self) -> int:
        """Insert or take over this node's row with a new epoch and a fresh lease; returns
        the epoch."""
        sent = time.monotonic()
        async with self.db.transaction("nodes.register") as tx:
            # the old epoch's fenced transactions end first (see the module docstring)
            await tx.execute("SELECT 1 FROM nodes WHERE id = %s FOR UPDATE", (self.node_id,))
            epoch = await tx.fetchval(
                "INSERT INTO nodes (id, epoch, host, listeners, started_at, last_heartbeat,"
                "                   lease_expires_at)"
                " VALUES (%s, nextval('nodes_epoch_seq'), %s, %s::jsonb, clock_timestamp(),"
                "         clock_timestamp(), clock_timestamp() + make_interval(secs => %s))"
                " ON CONFLICT (id) DO UPDATE SET epoch = EXCLUDED.epoch, host = EXCLUDED.host,"
                "   listeners = EXCLUDED.listeners, started_at = EXCLUDED.started_at,"
                "   last_heartbeat = EXCLUDED.last_heartbeat,"
                "   lease_expires_at = EXCLUDED.lease_expires_at"
                " RETURNING epoch",
                (self.node_id, self.host, json.dumps(self.listeners), self.settings.lease_duration),
            )
        self.epoch = int(epoch)
        self._valid_until = sent + self.settings.lease_duration
        _log.info("node %s registered with epoch %d", self.node_id, self.epoch)
        return self.epoch

    async def heartbeat(self) -> None:
        """Extend the lease; ``LeaseLostError`` when it had expired or was replaced."""
        if self.epoch is None:
            raise LeaseLostError(self.db.name, f"node {self.node_id} is not registered")
        epoch = self.epoch
        sent = time.monotonic()
        async with self.db.transaction(
            "nodes.heartbeat", time_limit=self.settings.lease_duration
        ) as tx:
            renewed = await tx.execute(
                "UPDATE nodes SET last_heartbeat = clock_timestamp(),"
                "   lease_expires_at = clock_timestamp() + make_interval(secs => %s)"
                " WHERE id = %s AND epoch = %s AND lease_expires_at > clock_timestamp()",
                (self.settings.lease_duration, self.node_id, epoch),
            )
        if not renewed:
            self.epoch = None
            raise LeaseLostError(
                self.db.name,
                f"node {self.node_id}: the lease of epoch {epoch} expired or was replaced",
            )
        self._valid_until = sent + self.settings.lease_duration

    async def run_heartbeats(self, on_lost: Callable[[LeaseLostError], None]) -> None:
        """Heartbeat every ``heartbeat_interval`` until cancelled or the lease is lost; then
        ``on_lost`` is called once and the loop ends. A heartbeat that fails (the database is
        unreachable) is logged and tried again at the next interval, as long as the lease
        certainly still holds; one still unanswered when the lease ends locally counts as
        failed, so a loss is reported within the lease, however the database behaves."""
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            try:
                async with asyncio.timeout(max(0.0, self._valid_until - time.monotonic())):
                    await self.heartbeat()
            except LeaseLostError as exc:
                on_lost(exc)
                return
            except (DatabaseError, TimeoutError) as exc:
                if self.holds_lease():
                    _log.warning("node %s: heartbeat failed: %s", self.node_id, exc)
                    continue
                epoch, self.epoch = self.epoch, None
                reason = exc.reason if isinstance(exc, DatabaseError) else "no answer"
                on_lost(
                    LeaseLostError(
                        self.db.name,
                        f"node {self.node_id}: no heartbeat of epoch {epoch} got through "
                        f"within the lease ({reason})",
                    )
                )
                return

    def start_heartbeats(self, on_lost: Callable[[LeaseLostError], None]) -> None:
        """Run :meth:`run_heartbeats` in a task (ended by :meth:`deregister`)."""
        if self._heartbeats is not None and not self._heartbeats.done():
            raise RuntimeError("heartbeats already running")
        self._heartbeats = asyncio.create_task(
            self.run_heartbeats(on_lost), name=f"wharf-heartbeat-{self.node_id}"
        )

    async def stop_heartbeats(self) -> None:
        task, self._heartbeats = self._heartbeats, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                current = asyncio.current_task()
                if current is not None and current.cancelling():
                    raise

    async def deregister(self) -> None:
        """Clean shutdown: stop heartbeating and delete this registration's row (a newer
        registration of the same id is left alone)."""
        await self.stop_heartbeats()
        epoch, self.epoch = self.epoch, None
        if epoch is None:
            return
        async with self.db.transaction("nodes.deregister") as tx:
            await tx.execute(
                "DELETE FROM nodes WHERE id = %s AND epoch = %s", (self.node_id, epoch)
            )
        _log.info("node %s (epoch %d) deregistered", self.node_id, epoch)
