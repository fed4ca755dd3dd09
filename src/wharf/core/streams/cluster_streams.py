"""Opening a node's streams in cluster mode: the stream writer, reader and watermarks over the
node's engines, the :class:`ClusterTopicManager` that serves them, and the background jobs
(:class:`~wharf.core.streams.cluster_maintenance.ClusterMaintenance`; imported only in cluster
mode: the cluster's drivers are an optional extra).

The writer tells the reader's cache of every object it committed (``on_object``), so tail
consumers on the producing node read from memory. Closing the manager stops the background
jobs (a running one finishes its bounded round), closes the writer (it commits what is pending),
then the watermarks' LISTEN connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wharf.cluster.streams.reader import StreamReader
from wharf.cluster.streams.watermarks import Watermarks
from wharf.cluster.streams.writer import StreamWriter
from wharf.core.clock import Clock
from wharf.core.config import BrokerConfig
from wharf.core.streams.cluster_maintenance import ClusterMaintenance
from wharf.core.streams.cluster_topics import ClusterStreams, ClusterTopicManager

if TYPE_CHECKING:
    from wharf.core.cluster_node import ClusterNode

__all__ = ["open_cluster_topics"]


async def open_cluster_topics(
    node: ClusterNode, config: BrokerConfig, clock: Clock
) -> ClusterTopicManager:
    """The node's topics with the catalogue loaded and its streams started (not yet its
    refreshes: :meth:`ClusterTopicManager.start`)."""
    reader = StreamReader(node.db, node.store)
    writer = StreamWriter(node.db, node.store, node.node_id, node.lease, on_object=reader.remember)
    watermarks = Watermarks(node.db)
    maintenance: ClusterMaintenance | None = None

    async def close() -> None:
        try:
            if maintenance is not None:
                await maintenance.close()
            await writer.close()
        finally:
            await watermarks.close()

    writer.start()
    try:
        await watermarks.start()
        streams = ClusterStreams(writer, reader, watermarks, close)
        topics = await ClusterTopicManager.open(
            node.db, node.lease, config, clock, streams, live_nodes=lambda: len(node.brokers)
        )
        maintenance = ClusterMaintenance(node, topics, config, clock, streams.jobs)
        maintenance.start()
        return topics
    except BaseException:
        await close()
        raise
