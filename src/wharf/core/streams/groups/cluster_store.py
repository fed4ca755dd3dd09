"""Committed offsets in a cluster: the catalogue database, with a copy in memory of the groups
this node coordinates.

How it works. The group coordinator reads committed offsets synchronously, so this store keeps
a copy of each *claimed* group's offsets and of its last completed generation. :meth:`claim`
makes this node the group's coordinator in the database (``wharf.cluster.groups.claim_group``:
fenced by the node's lease; refused while another live node holds the group) and loads that
copy from the same transaction. Every change writes through to the database in one fenced
transaction first (the node's lease and the group's row still naming this node and epoch), then
updates the copy; a change refused because the group moved or the lease ended raises
:class:`NotCoordinatorError` after forgetting the group, so its members find the new
coordinator. :meth:`forget` drops a group's copy when this node stops coordinating it, and
:meth:`release` clears its row so that the next coordinator can claim it at once.

Membership snapshots (``snapshot.py``) go to the group's row: generation, protocol type and
name, leader and state in their columns, and the whole snapshot (members with their
assignments) as the ``assignment`` JSON, so that a successor restores the group as it was.

Commit times are the database's clock; reads of groups this node has not claimed see nothing
(in a cluster, each node answers for the groups it coordinates). ``wharf.cluster`` is imported
inside the methods only: this module is imported in single-node mode too.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, TypeVar

from wharf.core.streams.errors import NotCoordinatorError
from wharf.core.streams.groups.snapshot import decode_snapshot
from wharf.core.streams.offsets import OffsetAndMetadata, TopicPartition

if TYPE_CHECKING:
    from wharf.cluster.catalog import NodeLease
    from wharf.cluster.groups import StoredGroup
    from wharf.core.cluster_node import ClusterNode

__all__ = ["ClusterOffsetStore"]

T = TypeVar("T")


class ClusterOffsetStore:
    """Committed offsets and group snapshots in the cluster's database; see the module
    docstring. Implements :class:`~wharf.core.streams.groups.store.GroupStore`."""

    def __init__(self, cluster: ClusterNode) -> None:
        self._cluster = cluster
        self._claims: dict[str, int] = {}  # claimed group -> the epoch it was claimed under
        self._offsets: dict[str, dict[TopicPartition, OffsetAndMetadata]] = {}
        self._snapshots: dict[str, bytes] = {}

    def start(self) -> None:
        """Nothing to start: the database belongs to the cluster node."""

    async def close(self) -> None:
        """Nothing to close: the database belongs to the cluster node."""

    # ------------------------------------------------------------------ claims

    def claimed_epoch(self, group_id: str) -> int | None:
        """The node epoch under which this node claimed ``group_id`` (``None``: not claimed)."""
        return self._claims.get(group_id)

    def claimed(self) -> dict[str, int]:
        """Every claimed group, with the epoch it was claimed under."""
        return dict(self._claims)

    async def claim(self, group_id: str) -> str | None:
        """Coordinate ``group_id`` from now on and load its offsets and snapshot; returns
        ``None`` when claimed, else the live node that holds it. ``StorageError`` (the
        database's, or ``LeaseLostError``) when the claim could not be made."""
        from wharf.cluster.groups import ClaimStatus, claim_group

        lease = self._cluster.lease()
        claim = await claim_group(self._cluster.db, lease, group_id)
        if claim.status is not ClaimStatus.CLAIMED:
            return claim.holder or "another node"
        self._claims[group_id] = lease.epoch
        committed = {
            TopicPartition(name, partition): OffsetAndMetadata(
                c.offset, c.metadata, c.leader_epoch, c.committed_at_ms
            )
            for (name, partition), c in claim.offsets.items()
        }
        self._offsets.pop(group_id, None)
        if committed:
            self._offsets[group_id] = committed
        self._snapshots.pop(group_id, None)
        if claim.group is not None and claim.group.assignment:
            self._snapshots[group_id] = json.dumps(claim.group.assignment).encode()
        return None

    def forget(self, group_id: str) -> None:
        """Drop the group's copy: this node no longer coordinates it."""
        self._claims.pop(group_id, None)
        self._offsets.pop(group_id, None)
        self._snapshots.pop(group_id, None)

    async def release(self, group_id: str, epoch: int) -> None:
        """Clear the group's row if the claim made under ``epoch`` still holds it."""
        from wharf.cluster.groups import release_group

        await release_group(self._cluster.db, self._lease_of(epoch), group_id)

    def _lease_of(self, epoch: int) -> NodeLease:
        from wharf.cluster.catalog import NodeLease

        return NodeLease(self._cluster.node_id, epoch)

    def _claim_lease(self, group_id: str) -> NodeLease:
        """The lease a write for ``group_id`` is fenced with: the one it was claimed under."""
        epoch = self._claims.get(group_id)
        if epoch is None:
            raise NotCoordinatorError(f"this node does not coordinate group {group_id!r}")
        return self._lease_of(epoch)

    # ------------------------------------------------------------------ queries

    def groups(self) -> list[str]:
        return sorted(self._offsets)

    def has_group(self, group_id: str) -> bool:
        return group_id in self._offsets

    def group_metadata(self) -> dict[str, bytes]:
        return dict(self._snapshots)

    def fetch(
        self, group_id: str, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        committed = self._offsets.get(group_id, {})
        if partitions is None:
            return dict(committed)
        return {tp: committed[tp] for tp in partitions if tp in committed}

    # ------------------------------------------------------------------ changes

    async def commit(
        self, group_id: str, offsets: Mapping[TopicPartition, OffsetAndMetadata]
    ) -> None:
        """One fenced transaction for the whole commit, then the copy. Partitions the catalogue
        does not know are left out (the coordinator checked them against the topics first)."""
        from wharf.cluster.groups import CommitStatus, NewOffset, commit_offsets

        wanted = {
            (tp.topic, tp.partition): NewOffset(e.offset, e.leader_epoch, e.metadata)
            for tp, e in offsets.items()
        }
        statuses, committed_at = await self._fenced(
            group_id, lambda lease: commit_offsets(self._cluster.db, lease, group_id, wanted)
        )
        copy = self._offsets.setdefault(group_id, {})
        for tp, entry in offsets.items():
            if statuses.get((tp.topic, tp.partition)) is CommitStatus.COMMITTED:
                copy[tp] = OffsetAndMetadata(
                    entry.offset, entry.metadata, entry.leader_epoch, committed_at
                )
        if not copy:
            del self._offsets[group_id]

    async def store_group_metadata(self, group_id: str, snapshot: bytes | None) -> None:
        """Write the group's last completed generation (``None``: the group has no members)."""
        from wharf.cluster.groups import store_group

        stored = _stored_group(snapshot)
        await self._fenced(
            group_id, lambda lease: store_group(self._cluster.db, lease, group_id, stored)
        )
        if snapshot is None:
            self._snapshots.pop(group_id, None)
        else:
            self._snapshots[group_id] = snapshot

    async def delete(self, group_id: str, partitions: Iterable[TopicPartition]) -> None:
        from wharf.cluster.groups import delete_offsets

        committed = self._offsets.get(group_id, {})
        gone = [tp for tp in partitions if tp in committed]
        if not gone:
            return
        await self._fenced(
            group_id,
            lambda lease: delete_offsets(
                self._cluster.db, lease, group_id, [(tp.topic, tp.partition) for tp in gone]
            ),
        )
        for tp in gone:
            committed.pop(tp, None)
        if not committed:
            self._offsets.pop(group_id, None)

    async def delete_group(self, group_id: str) -> None:
        """Delete the group's row and offsets; the next use of the group claims it afresh."""
        from wharf.cluster.groups import delete_group

        await self._fenced(group_id, lambda lease: delete_group(self._cluster.db, lease, group_id))
        self.forget(group_id)

    async def delete_topic(self, topic: str) -> None:
        """The catalogue no longer shows offsets of a deleted topic; drop them from the copy."""
        for group_id in list(self._offsets):
            committed = self._offsets[group_id]
            for tp in [tp for tp in committed if tp.topic == topic]:
                del committed[tp]
            if not committed:
                del self._offsets[group_id]

    async def expire(
        self, now_ms: int, retention_ms: int, empty_since: Callable[[str], int | None]
    ) -> int:
        """Expire offsets of claimed groups without members, as the local store does."""
        removed = 0
        for group_id, committed in list(self._offsets.items()):
            since = empty_since(group_id)
            if since is None:
                continue
            expired = [
                tp
                for tp, entry in committed.items()
                if max(entry.commit_timestamp_ms, since) + retention_ms <= now_ms
            ]
            if expired:
                await self.delete(group_id, expired)
                removed += len(expired)
        return removed

    async def _fenced(self, group_id: str, write: Callable[[NodeLease], Awaitable[T]]) -> T:
        """Run a fenced write with the group's claim lease; a refusal forgets the group and
        raises :class:`NotCoordinatorError`."""
        from wharf.cluster.groups import GroupMovedError
        from wharf.cluster.nodes import LeaseLostError

        lease = self._claim_lease(group_id)
        try:
            return await write(lease)
        except (GroupMovedError, LeaseLostError) as exc:
            self.forget(group_id)
            raise NotCoordinatorError(
                f"this node no longer coordinates group {group_id!r}: {exc.reason}"
            ) from exc


def _stored_group(snapshot: bytes | None) -> StoredGroup:
    from wharf.cluster.groups import StoredGroup

    decoded = None if snapshot is None else decode_snapshot(snapshot)
    if snapshot is None or decoded is None:
        return StoredGroup()
    return StoredGroup(
        decoded.generation_id,
        decoded.protocol_type or None,
        decoded.protocol_name or None,
        decoded.leader_id or None,
        "Stable",
        json.loads(snapshot),
    )
