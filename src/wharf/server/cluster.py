"""``wharf serve --cluster``: this process as a node of a cluster, from joining to leaving.

How it works: :meth:`ClusterMember.join` runs before the broker opens. It loads the node id
kept in the data directory, connects the catalogue database (a wrong URL, password or an
unreachable server fails here, with PostgreSQL's reason), migrates the schema, looks up the
node's Kafka broker id and the cluster id, and opens the object store (creating the bucket if it
is missing). It builds the :class:`~wharf.core.cluster_node.ClusterNode` the broker is opened
with; the node is not registered yet, because the others must be told the ports the listeners
really bound (settings may say 0).

Once the listeners run, :meth:`ClusterMember.announce` registers the node with the advertised
host and the bound ports (a new epoch), starts the heartbeats, and starts the view: twice per
heartbeat interval one query (:func:`~wharf.cluster.nodes.registered_nodes`) refreshes
``node.brokers``, the routable nodes Kafka clients are given (live, with database sessions
open and heartbeats on time, so a node killed with -9 leaves the list at the next read); a
node about to refuse a client on that list reads it again first
(:meth:`~wharf.core.cluster_node.ClusterNode.read_brokers_now`). A
lost lease (a heartbeat found it expired or replaced, or none got through within it) is
logged and the node registers again
with a new epoch, retrying every heartbeat interval while the database is unreachable; writes
made meanwhile fail on their own, since each checks the lease in its transaction.

:meth:`ClusterMember.close`, after the broker closed, stops all this, deletes the node's row (so
the others drop it at once instead of after its lease) and closes both engines.

Latency: every database transaction and object-store call is observed into the histogram
families ``database_latency`` and ``object_store_latency`` from the first connect on;
:meth:`ClusterMember.attach` hands them to the broker's stats for ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from wharf.core.cluster_node import ClusterNode, LiveBroker
from wharf.core.stats import CLUSTER_BUCKETS_S, BrokerStats, HistogramFamily
from wharf.errors import StorageError
from wharf.server.app import StartupError
from wharf.server.kafka.listener import default_advertised_host
from wharf.server.listener import Endpoint
from wharf.server.settings import ServerSettings

if TYPE_CHECKING:  # the cluster's drivers are an optional extra, imported only in cluster mode
    from wharf.cluster.nodes import LeaseLostError, RegisteredNode

__all__ = ["ClusterMember", "live_brokers"]

log = logging.getLogger("wharf.server.cluster")

# Routing, not fencing: a node is left out of Metadata once its database sessions are gone
# (kill -9 closes them at once) or it missed this many heartbeats; its lease still decides
# what it may commit. The view is read this many times per heartbeat interval, so clients
# of a killed node are sent elsewhere within about half a heartbeat.
HEARTBEATS_MISSED = 2
VIEW_REFRESHES_PER_HEARTBEAT = 2


def live_brokers(rows: Sequence[RegisteredNode]) -> list[LiveBroker]:
    """The nodes that Kafka clients may be sent to (routable: live, connected to the database
    and heartbeating on time), by broker id."""
    found = [
        LiveBroker(row.broker_id, row.info.id, row.info.host, row.info.listeners["kafka"])
        for row in rows
        if row.routable and row.broker_id is not None and "kafka" in row.info.listeners
    ]
    return sorted(found, key=lambda b: b.broker_id)


def _one_line(exc: BaseException) -> str:
    return "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())


class ClusterMember:
    """This node's engines, registration and view of the others; see the module docstring."""

    def __init__(
        self,
        node: ClusterNode,
        interval_s: float,
        database_latency: HistogramFamily[str],
        object_store_latency: HistogramFamily[str],
    ) -> None:
        self.node = node
        self.database_latency = database_latency
        self.object_store_latency = object_store_latency
        self._interval_s = interval_s
        self._tasks: set[asyncio.Task[None]] = set()
        self._view_failing = False
        self._closed = False
        node.read_brokers = self.refresh

    @classmethod
    async def join(cls, settings: ServerSettings) -> ClusterMember:
        """Connect, migrate and open the engines; ``StartupError`` (one line, the engine's
        reason) when any fails."""
        from wharf.cluster.database import Database
        from wharf.cluster.migrations import migrate
        from wharf.cluster.nodes import (
            Membership,
            MembershipSettings,
            broker_id,
            cluster_id,
            load_node_id,
        )
        from wharf.cluster.objectstore import ObjectStore, ObjectStoreConfig

        cluster = settings.cluster
        assert cluster.database is not None and cluster.object_store is not None
        database_latency: HistogramFamily[str] = HistogramFamily(CLUSTER_BUCKETS_S)
        store_latency: HistogramFamily[str] = HistogramFamily(CLUSTER_BUCKETS_S)
        try:
            node_id = await asyncio.to_thread(load_node_id, settings.data_dir)
            db = await Database.connect(
                cluster.database,
                node_id=node_id,
                observe=lambda op, s: database_latency[op].observe(s),
            )
        except StorageError as exc:
            raise StartupError(_one_line(exc)) from None
        try:
            await migrate(db)
            kafka_id = await broker_id(db, node_id)
            cid = await cluster_id(db)
            config = ObjectStoreConfig.from_url(
                cluster.object_store,
                endpoint=cluster.object_store_endpoint,
                region=cluster.object_store_region,
            )
            store = await ObjectStore.open(
                config, observe=lambda op, s: store_latency[op].observe(s)
            )
        except BaseException as exc:
            await db.close()
            if isinstance(exc, StorageError):
                raise StartupError(_one_line(exc)) from None
            raise
        host = settings.advertised_host or default_advertised_host(settings.host)
        interval_s = cluster.heartbeat_interval_ms / 1000
        membership = Membership(
            db, node_id, host, {}, MembershipSettings(interval_s, cluster.lease_ms / 1000)
        )
        node = ClusterNode(node_id, kafka_id, db, store, membership, cluster_id=cid)
        log.info(
            "node %s joins cluster %s as broker %d (database %s, object store s3://%s/%s)",
            node_id, cid, kafka_id, db.name, config.bucket, config.prefix,
        )  # fmt: skip
        return cls(node, interval_s, database_latency, store_latency)

    def attach(self, stats: BrokerStats) -> None:
        """Report this node's engine latencies through ``stats`` (read by ``/metrics``)."""
        stats.database = self.database_latency
        stats.object_store = self.object_store_latency

    async def announce(self, endpoints: Sequence[Endpoint]) -> None:
        """Register with the bound ports, then heartbeat and keep ``node.brokers`` fresh."""
        membership = self.node.membership
        membership.listeners = {name: port for name, _host, port in endpoints}
        try:
            await membership.register()
        except StorageError as exc:
            raise StartupError(_one_line(exc)) from None
        membership.start_heartbeats(self._lease_lost)
        await self.refresh()
        self._spawn(self._watch(), "wharf-cluster-view")

    async def refresh(self) -> None:
        """Read the live nodes once into ``node.brokers`` (kept as it was if that fails)."""
        from wharf.cluster.nodes import registered_nodes

        try:
            rows = await registered_nodes(
                self.node.db, heartbeat_grace=HEARTBEATS_MISSED * self._interval_s
            )
        except StorageError as exc:
            if not self._view_failing:
                log.warning("cannot read the cluster's live nodes, keeping the last list: %s", exc)
            self._view_failing = True
            return
        if self._view_failing:
            log.info("the cluster's live nodes are read again")
            self._view_failing = False
        before = {b.broker_id for b in self.node.brokers}
        self.node.brokers = live_brokers(rows)
        after = {b.broker_id for b in self.node.brokers}
        if before and after != before:
            log.info("live brokers: %s", " ".join(str(b) for b in sorted(after)) or "none")

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s / VIEW_REFRESHES_PER_HEARTBEAT)
            await self.node.read_brokers_now()

    def _lease_lost(self, exc: LeaseLostError) -> None:
        if self._closed:
            return
        log.error("%s; registering again", exc)
        self._spawn(self._rejoin(), "wharf-cluster-rejoin")

    async def _rejoin(self) -> None:
        membership = self.node.membership
        while True:
            try:
                await membership.register()
            except StorageError as exc:
                log.warning("node %s cannot register again yet: %s", self.node.node_id, exc)
                await asyncio.sleep(self._interval_s)
                continue
            membership.start_heartbeats(self._lease_lost)
            await self.refresh()
            return

    def _spawn(self, body: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(body, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        """Leave the cluster (delete the node's row) and close both engines."""
        self._closed = True
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        node = self.node
        try:
            await node.membership.deregister()
        except StorageError as exc:
            log.warning("node %s could not deregister (its lease will expire): %s",
                        node.node_id, exc)  # fmt: skip
        finally:
            await node.store.close()
            await node.db.close()
        log.info("node %s left the cluster", node.node_id)
