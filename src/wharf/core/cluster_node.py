"""What a node in cluster mode holds: its engines, its membership, and its view of the others.

A broker opened with a :class:`ClusterNode` keeps its streams in the cluster (PostgreSQL for the
catalogue and offsets, the object store for batches) instead of on local disk. The composition
root (``wharf serve --cluster``) builds it: it connects the database and the object store,
migrates the schema, registers the node and starts its heartbeats; it refreshes :attr:`brokers`,
the live nodes as Kafka clients see them, after every heartbeat.

Nodes read that list on their own timers, so for a moment after a node dies or joins two nodes
may disagree: one sends a client to a second node that, on its older list, thinks a third one
should serve it. Before a node refuses a request its list sends elsewhere it calls
:meth:`ClusterNode.read_brokers_now`, which returns once a read of the list that began after the
call has ended (one read at a time; callers that arrive during a read share the next one), so
the refusal is made on a list at least as fresh as the one the client was routed by.

Kafka clients name brokers by a 32-bit id, not by Wharf's node id (a UUID or an operator's
name): :attr:`LiveBroker.broker_id` is the stable number the database gave the node id when it
first registered (migration 3), so a node that restarts keeps its Kafka id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the cluster's drivers are an optional extra, imported only in cluster mode
    from wharf.cluster.catalog import NodeLease
    from wharf.cluster.database import Database
    from wharf.cluster.nodes import Membership
    from wharf.cluster.objectstore import ObjectStore

__all__ = ["ClusterNode", "LiveBroker"]


@dataclass(frozen=True, slots=True)
class LiveBroker:
    """A live node as Kafka clients see it."""

    broker_id: int
    node_id: str
    host: str
    kafka_port: int


@dataclass(slots=True)
class ClusterNode:
    """This node's engines and membership; :attr:`brokers` is kept fresh by the server."""

    node_id: str
    broker_id: int
    db: Database
    store: ObjectStore
    membership: Membership
    cluster_id: str = "wharf"
    """The id Kafka clients are told (drawn once by the database's migration 3)."""
    brokers: list[LiveBroker] = field(default_factory=list)
    """The live nodes, by broker id; this node among them once registered."""
    read_brokers: Callable[[], Awaitable[None]] | None = None
    """Reads the live nodes into :attr:`brokers` (set by the server; ``None``: never reread)."""
    _reads_started: int = field(default=0, init=False, repr=False)
    _reads_ended: int = field(default=0, init=False, repr=False)
    _reading: asyncio.Future[None] | None = field(default=None, init=False, repr=False)

    async def read_brokers_now(self) -> None:
        """Return once :attr:`brokers` comes from a read that began after this call."""
        if self.read_brokers is None:
            return
        wanted = self._reads_started + 1
        while self._reads_ended < wanted:
            if self._reading is None:
                self._reading = asyncio.ensure_future(self._read_once(self.read_brokers))
            await asyncio.shield(self._reading)

    async def _read_once(self, read: Callable[[], Awaitable[None]]) -> None:
        self._reads_started += 1
        started = self._reads_started
        try:
            await read()
        finally:
            self._reads_ended = started
            self._reading = None

    def lease(self) -> NodeLease:
        """The fencing token every write on this node's authority carries;
        ``LeaseLostError`` while the node holds none."""
        from wharf.cluster.catalog import NodeLease

        return NodeLease.of(self.membership)
