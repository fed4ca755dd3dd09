"""Opening a node's streams in cluster mode: the stream writer, reader and watermarks over the
node's engines, and the :class:`ClusterTopicManager` that serves them (imported only in
cluster mode: the cluster's drivers are an optional extra).

The writer tells the reader's cache of every object it committed (``on_object``), so tail
consumers on the producing node read from memory. Closing the manager closes the writer first
(it commits what is pending), then the watermarks' LISTEN connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wharf.cluster.streams.reader import StreamReader
from wharf.cluster.streams.watermarks import Watermarks
from wharf.cluster.streams.writer import StreamWriter
from wharf.core.clock import Clock
from wharf.core.config import BrokerConfig
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

    async def close() -> None:
        try:
            await writer.close()
        finally:
            await watermarks.close()

    writer.start()
    try:
        await watermarks.start()
        return await ClusterTopicManager.open(
            node.db, node.lease, config, clock, ClusterStreams(writer, reader, watermarks, close)
        )
    except BaseException:
        await close()
        raise
