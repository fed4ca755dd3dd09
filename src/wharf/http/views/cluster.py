"""The cluster as ``/api/cluster`` and the dashboard show it: every registered node, read from
the catalogue database when asked (so the lease times are the database's, not a cached view).
The database's driver is imported only in cluster mode."""

from __future__ import annotations

from datetime import datetime

from wharf.core.broker import Broker
from wharf.http.schemas import ClusterMember, ClusterView

__all__ = ["cluster_view"]

SINGLE_NODE = ClusterView(
    mode="single-node", node_id=None, broker_id=None, cluster_id=None, nodes=[]
)


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)


async def cluster_view(broker: Broker) -> ClusterView:
    """The registered nodes, by id (``StorageError`` when the database does not answer)."""
    node = broker.cluster
    if node is None:
        return SINGLE_NODE
    from wharf.cluster.nodes import registered_nodes

    rows = await registered_nodes(node.db)
    return ClusterView(
        mode="cluster",
        node_id=node.node_id,
        broker_id=node.broker_id,
        cluster_id=node.cluster_id,
        nodes=[
            ClusterMember(
                node_id=row.info.id,
                broker_id=row.broker_id,
                epoch=row.info.epoch,
                host=row.info.host,
                listeners=row.info.listeners,
                started_at_ms=_ms(row.info.started_at),
                last_heartbeat_ms=_ms(row.info.last_heartbeat),
                lease_expires_at_ms=_ms(row.info.lease_expires_at),
                live=row.live,
                this_node=row.info.id == node.node_id,
            )
            for row in rows
        ],
    )
