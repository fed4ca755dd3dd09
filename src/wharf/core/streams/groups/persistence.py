"""Saving each group's membership when it becomes Stable, and restoring it after a restart.

How it works. :meth:`GroupPersistence.save` turns a Stable group into a
:class:`~wharf.core.streams.groups.snapshot.GroupSnapshot` (any other state into a tombstone)
and stores it in the offsets log from a task, so the membership call that triggered it does not
wait for the disk. Tasks reach the store's lock in creation order, so snapshots of one group are
stored in the order they were taken; :meth:`GroupPersistence.wait` lets shutdown (and tests)
wait for them. A failed write is logged: the group then rebalances after a restart instead of
carrying on. :meth:`GroupPersistence.restore` reads the snapshots back as Stable groups; the
coordinator gives each restored member a fresh session timer.
"""

from __future__ import annotations

import asyncio
import logging

from wharf.core.streams.groups.group import Group, Member
from wharf.core.streams.groups.snapshot import (
    SNAPSHOT_VERSION,
    GroupSnapshot,
    MemberSnapshot,
    decode_snapshot,
    encode_snapshot,
)
from wharf.core.streams.groups.state import GroupState
from wharf.core.streams.groups.store import GroupStore
from wharf.errors import StorageError

__all__ = ["GroupPersistence"]

log = logging.getLogger(__name__)


class GroupPersistence:
    """Membership snapshots of the groups of one coordinator, in its offset store."""

    def __init__(self, store: GroupStore) -> None:
        self._store = store
        self._writing: set[asyncio.Task[None]] = set()

    def restore(self, now_ms: int) -> list[Group]:
        """The groups that were Stable when the broker stopped, Stable since ``now_ms``."""
        restored = (
            _restore(group_id, data, now_ms)
            for group_id, data in self._store.group_metadata().items()
        )
        return [group for group in restored if group is not None]

    def restore_group(self, group_id: str, now_ms: int) -> Group | None:
        """One group as its snapshot in the store has it (Stable since ``now_ms``), if any: a
        cluster node that has just claimed the group carries it on in its generation."""
        data = self._store.group_metadata().get(group_id)
        return None if data is None else _restore(group_id, data, now_ms)

    def save(self, group: Group) -> None:
        """Store the group's membership as of now (a Stable group) or drop it (any other)."""
        data = encode_snapshot(_to_snapshot(group)) if group.state is GroupState.STABLE else None
        task = asyncio.get_running_loop().create_task(self._write(group.group_id, data))
        self._writing.add(task)
        task.add_done_callback(self._writing.discard)

    async def wait(self) -> None:
        """Wait until every snapshot saved so far is stored."""
        while self._writing:
            await asyncio.gather(*self._writing)

    async def _write(self, group_id: str, data: bytes | None) -> None:
        try:
            await self._store.store_group_metadata(group_id, data)
        except StorageError:
            log.exception(
                "membership of group %r not saved; it will rebalance after a restart", group_id
            )


def _restore(group_id: str, data: bytes, now_ms: int) -> Group | None:
    snapshot = decode_snapshot(data)
    if snapshot is None or not snapshot.members:
        log.warning("ignoring unreadable membership snapshot of group %r", group_id)
        return None
    return _from_snapshot(group_id, snapshot, now_ms)


def _to_snapshot(group: Group) -> GroupSnapshot:
    return GroupSnapshot(
        SNAPSHOT_VERSION,
        group.generation_id,
        group.protocol_type or "",
        group.protocol_name or "",
        group.leader_id or "",
        [
            MemberSnapshot(
                m.member_id,
                m.group_instance_id,
                m.client_id,
                m.client_host,
                m.session_timeout_ms,
                m.rebalance_timeout_ms,
                list(m.protocols),
                m.assignment,
            )
            for m in group.members.values()
        ],
    )


def _from_snapshot(group_id: str, snapshot: GroupSnapshot, now_ms: int) -> Group:
    group = Group(
        group_id,
        state=GroupState.STABLE,
        state_since_ms=now_ms,
        generation_id=snapshot.generation_id,
        protocol_type=snapshot.protocol_type,
        protocol_name=snapshot.protocol_name,
        leader_id=snapshot.leader_id,
    )
    for m in snapshot.members:
        group.members[m.member_id] = Member(
            m.member_id,
            m.group_instance_id,
            m.client_id,
            m.client_host,
            m.session_timeout_ms,
            m.rebalance_timeout_ms,
            snapshot.protocol_type,
            [(name, meta) for name, meta in m.protocols],
            assignment=m.assignment,
        )
        if m.group_instance_id is not None:
            group.static_members[m.group_instance_id] = m.member_id
    if group.leader_id not in group.members:
        group.leader_id = next(iter(group.members))
    return group
