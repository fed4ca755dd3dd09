"""Committed offsets as the group coordinator serves them, over the durable store
(``store.py``).

How it works. The store keeps the offsets; this facade adds the group rules around it. A commit
(already accepted by the membership state machine for its member and generation) is checked
per partition (the partition must exist, the metadata must fit), stamped with the broker
clock's time and stored; a group that exists only through its offsets shows as Empty.
OffsetDelete refuses topics that live members of a ``consumer`` group subscribe to. Offsets
of a group that has had no members for ``offsets_retention_ms`` expire.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from wharf.core.clock import Clock
from wharf.core.config import BrokerConfig
from wharf.core.streams.errors import ErrorCode
from wharf.core.streams.groups.group import Group, GroupTable
from wharf.core.streams.groups.state import GroupState
from wharf.core.streams.groups.store import GroupStore
from wharf.core.streams.groups.subscription import subscribed_topics
from wharf.core.streams.offsets import OffsetAndMetadata, TopicPartition

__all__ = ["MAX_OFFSET_METADATA_BYTES", "CommittedOffsets"]

MAX_OFFSET_METADATA_BYTES = 4096  # Kafka's offset.metadata.max.bytes default


class CommittedOffsets:
    """Commit, fetch, delete and expire the committed offsets of a coordinator's groups."""

    def __init__(
        self,
        config: BrokerConfig,
        clock: Clock,
        store: GroupStore,
        groups: GroupTable,
        partition_exists: Callable[[str, int], bool] | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self._store = store
        self._groups = groups
        self._partition_exists = partition_exists

    async def commit(
        self, group_id: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> dict[TopicPartition, ErrorCode]:
        """Store the acceptable ``offsets`` durably; returns a code per partition."""
        results: dict[TopicPartition, ErrorCode] = {}
        accepted: dict[TopicPartition, OffsetAndMetadata] = {}
        now = self._clock.now_ms()
        for tp, entry in offsets.items():
            if self._partition_exists is not None and not self._partition_exists(*tp):
                results[tp] = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION
            elif len(entry.metadata.encode()) > MAX_OFFSET_METADATA_BYTES:
                results[tp] = ErrorCode.OFFSET_METADATA_TOO_LARGE
            else:
                results[tp] = ErrorCode.NONE
                accepted[tp] = OffsetAndMetadata(
                    entry.offset, entry.metadata, entry.leader_epoch, commit_timestamp_ms=now
                )
        if accepted:
            await self._store.commit(group_id, accepted)
            if group_id not in self._groups:
                self._groups.add(Group(group_id, state_since_ms=now))
        return results

    def fetch(
        self, group_id: str, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """Committed offsets of ``group_id`` (all of them when ``partitions`` is None)."""
        return self._store.fetch(group_id, partitions)

    async def delete(
        self, group_id: str, partitions: Iterable[TopicPartition]
    ) -> tuple[ErrorCode, dict[TopicPartition, ErrorCode]]:
        """OffsetDelete: forget committed offsets, except for topics live members consume."""
        wanted = list(partitions)
        group = self._groups.get(group_id)
        if group is None and not self._store.has_group(group_id):
            return ErrorCode.GROUP_ID_NOT_FOUND, {}
        subscribed: set[str] = set()
        if group is not None and group.members:
            if group.protocol_type != "consumer":
                return ErrorCode.NON_EMPTY_GROUP, {}
            for member in group.members.values():
                topics = subscribed_topics(member.metadata(group.protocol_name or ""))
                subscribed |= topics or set()
        results = {
            tp: ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC if tp.topic in subscribed else ErrorCode.NONE
            for tp in wanted
        }
        await self._store.delete(
            group_id, [tp for tp, code in results.items() if code is ErrorCode.NONE]
        )
        return ErrorCode.NONE, results

    async def expire(self) -> int:
        """Drop offsets of groups without members older than ``offsets_retention_ms``."""

        def empty_since(group_id: str) -> int | None:
            group = self._groups.get(group_id)
            if group is None:
                return 0
            return group.state_since_ms if group.state is GroupState.EMPTY else None

        removed = await self._store.expire(
            self._clock.now_ms(), self._config.offsets_retention_ms, empty_since
        )
        for group in self._groups:
            self._groups.forget_if_unused(group)
        return removed
