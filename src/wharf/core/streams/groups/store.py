"""What the group coordinator needs from the store of committed offsets.

Two stores fit: :class:`~wharf.core.streams.offsets.OffsetStore`, the single node's log on
local disk, and, in a cluster, :class:`~wharf.core.streams.groups.cluster_store.ClusterOffsetStore`
(the catalogue database, with a copy in memory of the groups this node coordinates). Reads are
synchronous (from memory in both); changes are durable when they return.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Protocol

from wharf.core.streams.offsets import OffsetAndMetadata, TopicPartition

__all__ = ["GroupStore"]


class GroupStore(Protocol):
    def start(self) -> None: ...

    async def close(self) -> None: ...

    def groups(self) -> list[str]: ...

    def has_group(self, group_id: str) -> bool: ...

    def group_metadata(self) -> dict[str, bytes]: ...

    def fetch(
        self, group_id: str, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]: ...

    async def commit(
        self, group_id: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None: ...

    async def store_group_metadata(self, group_id: str, snapshot: bytes | None) -> None: ...

    async def delete(self, group_id: str, partitions: Iterable[TopicPartition]) -> None: ...

    async def delete_group(self, group_id: str) -> None: ...

    async def delete_topic(self, topic: str) -> None: ...

    async def expire(
        self, now_ms: int, retention_ms: int, empty_since: Callable[[str], int | None]
    ) -> int: ...
