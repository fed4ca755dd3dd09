"""Which node of a cluster coordinates each consumer group.

How it works. Rendezvous (highest random weight) hashing: every live broker gets a weight per
group, a hash of the group id and the node id, and the heaviest coordinates the group
(:func:`coordinator_for`). Every node computes the same answer from the same broker list, with
no table to share; when a node joins or leaves, only the groups it wins or held move.

:class:`GroupPlacement` is one node's side of it. :meth:`GroupPlacement.acquire` answers whether
this node coordinates a group now: it must hold its lease, be the group's rendezvous choice,
and have claimed the group in the database (the first use claims it, once, however many requests
ask at the same time). The claim, not the hash, is the authority: a claim is refused while
another live node holds the group, so two nodes whose broker lists disagree for a moment never
both coordinate it. Before it answers that another node should coordinate a group, a node reads
the broker list again (the client was sent here by a node whose list may be newer).
:meth:`GroupPlacement.moved` lists the claimed groups this node must drop:
the broker list now names another coordinator, the lease was lost, or the node registered
again (claims of an older epoch). Dropping a group releases its row, so that its new
coordinator can claim it at once instead of waiting for this node's lease to end.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from wharf.core.cluster_node import LiveBroker
from wharf.core.streams.errors import ErrorCode
from wharf.core.streams.groups.cluster_store import ClusterOffsetStore
from wharf.errors import StorageError

if TYPE_CHECKING:
    from wharf.core.cluster_node import ClusterNode

__all__ = ["GroupPlacement", "coordinator_for"]

log = logging.getLogger(__name__)


def coordinator_for(group_id: str, brokers: Sequence[LiveBroker]) -> LiveBroker | None:
    """The broker that coordinates ``group_id`` (``None`` when there is none)."""
    return max(brokers, key=lambda b: (_weight(group_id, b.node_id), b.node_id), default=None)


def _weight(group_id: str, node_id: str) -> int:
    key = f"{len(group_id)}:{group_id}{node_id}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big")


class GroupPlacement:
    """This node's claims of the groups it coordinates; see the module docstring."""

    def __init__(self, cluster: ClusterNode, store: ClusterOffsetStore) -> None:
        self._cluster = cluster
        self._store = store
        self._claiming: dict[str, asyncio.Lock] = {}
        self._releasing: set[asyncio.Task[None]] = set()
        self._unreleased: dict[str, int] = {}  # releases that failed, retried by the next sweep

    def coordinator(self, group_id: str) -> LiveBroker | None:
        return coordinator_for(group_id, self._cluster.brokers)

    def _current_epoch(self) -> int | None:
        membership = self._cluster.membership
        return membership.epoch if membership.holds_lease() else None

    def _chosen(self, group_id: str) -> bool:
        owner = self.coordinator(group_id)
        return owner is not None and owner.node_id == self._cluster.node_id

    def holds(self, group_id: str) -> bool:
        """Whether this node coordinates ``group_id`` right now (claimed under its current
        epoch and still its rendezvous choice)."""
        epoch = self._current_epoch()
        return (
            epoch is not None
            and self._store.claimed_epoch(group_id) == epoch
            and self._chosen(group_id)
        )

    async def acquire(self, group_id: str) -> tuple[ErrorCode, bool]:
        """``(NONE, claimed just now)`` when this node coordinates ``group_id``, claiming it
        first if needed; ``NOT_COORDINATOR`` when another node should, and
        ``COORDINATOR_NOT_AVAILABLE`` without a lease, a broker list or a claim."""
        if self._current_epoch() is None or not self._cluster.brokers:
            return ErrorCode.COORDINATOR_NOT_AVAILABLE, False
        if not self._chosen(group_id):
            await self._cluster.read_brokers_now()  # the client may be routed by a newer list
            if not self._chosen(group_id):
                return ErrorCode.NOT_COORDINATOR, False
        if self.holds(group_id):
            return ErrorCode.NONE, False
        async with self._claiming.setdefault(group_id, asyncio.Lock()):
            if self.holds(group_id):
                return ErrorCode.NONE, False
            try:
                holder = await self._store.claim(group_id)
            except StorageError as exc:
                log.warning("cannot claim group %r: %s", group_id, exc)
                return ErrorCode.COORDINATOR_NOT_AVAILABLE, False
            if holder is not None:
                log.info("group %r is still coordinated by node %s", group_id, holder)
                return ErrorCode.COORDINATOR_NOT_AVAILABLE, False
            return ErrorCode.NONE, True

    def moved(self) -> list[str]:
        """The claimed groups this node no longer coordinates (see the module docstring)."""
        epoch = self._current_epoch()
        return [
            group_id
            for group_id, claimed in self._store.claimed().items()
            if claimed != epoch or not self._chosen(group_id)
        ]

    def drop(self, group_id: str) -> None:
        """Forget the group's copy and release its row in the background."""
        epoch = self._store.claimed_epoch(group_id)
        self._store.forget(group_id)
        lock = self._claiming.get(group_id)
        if lock is not None and not lock.locked():
            del self._claiming[group_id]
        if epoch is not None:
            self._release(group_id, epoch)

    def retry_releases(self) -> None:
        for group_id, epoch in list(self._unreleased.items()):
            if self._store.claimed_epoch(group_id) is None:
                self._release(group_id, epoch)
            else:
                del self._unreleased[group_id]  # claimed again meanwhile

    def _release(self, group_id: str, epoch: int) -> None:
        self._unreleased.pop(group_id, None)
        task = asyncio.get_running_loop().create_task(self._run_release(group_id, epoch))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def _run_release(self, group_id: str, epoch: int) -> None:
        try:
            await self._store.release(group_id, epoch)
        except StorageError as exc:
            log.warning("cannot release group %r yet: %s", group_id, exc)
            self._unreleased[group_id] = epoch

    async def wait(self) -> None:
        """Wait for the releases under way."""
        while self._releasing:
            await asyncio.gather(*self._releasing)
