"""The admin side of consumer groups: list, describe and delete.

A group is visible here when the coordinator holds it in memory or when the offset store has
committed offsets for it (such a group shows as Empty). Descriptions follow Kafka: member
metadata, assignments and the protocol name are reported only for a Stable group. Only a group
without members (nor ids handed out to members about to join) can be deleted; deleting it also
deletes its committed offsets.
"""

from __future__ import annotations

from collections.abc import Iterable

from wharf.core.clock import Clock
from wharf.core.streams.errors import ErrorCode
from wharf.core.streams.groups.group import GroupTable
from wharf.core.streams.groups.state import GroupState
from wharf.core.streams.groups.store import GroupStore
from wharf.core.streams.groups.types import GroupDescription, GroupListing, MemberDescription

__all__ = ["GroupAdmin"]


class GroupAdmin:
    """List, describe and delete the groups of one coordinator."""

    def __init__(self, clock: Clock, store: GroupStore, groups: GroupTable) -> None:
        self._clock = clock
        self._store = store
        self._groups = groups

    def describe_group(self, group_id: str) -> GroupDescription:
        group = self._groups.get(group_id)
        if group is None:
            if self._store.has_group(group_id):
                return GroupDescription(group_id, GroupState.EMPTY, "", "")
            return GroupDescription(group_id, GroupState.DEAD, "", "")
        stable = group.state is GroupState.STABLE
        protocol = group.protocol_name or "" if stable else ""
        members = tuple(
            MemberDescription(
                m.member_id,
                m.group_instance_id,
                m.client_id,
                m.client_host,
                m.metadata(protocol) if stable else b"",
                m.assignment if stable else b"",
            )
            for m in group.members.values()
        )
        return GroupDescription(group_id, group.state, group.protocol_type or "", protocol, members)

    def list_groups(self, states: Iterable[GroupState] | None = None) -> list[GroupListing]:
        wanted = set(states) if states is not None else None
        listings = [GroupListing(g.group_id, g.protocol_type or "", g.state) for g in self._groups]
        listings += [
            GroupListing(group_id, "", GroupState.EMPTY)
            for group_id in self._store.groups()
            if group_id not in self._groups
        ]
        return sorted(
            (entry for entry in listings if wanted is None or entry.state in wanted),
            key=lambda entry: entry.group_id,
        )

    async def delete_groups(self, group_ids: Iterable[str]) -> dict[str, ErrorCode]:
        """Delete groups without members, with their committed offsets."""
        results: dict[str, ErrorCode] = {}
        for group_id in group_ids:
            group = self._groups.get(group_id)
            if not group_id:
                results[group_id] = ErrorCode.INVALID_GROUP_ID
            elif group is not None and group.in_use():
                results[group_id] = ErrorCode.NON_EMPTY_GROUP
            elif group is None and not self._store.has_group(group_id):
                results[group_id] = ErrorCode.GROUP_ID_NOT_FOUND
            else:
                if group is not None:
                    group.move_to(GroupState.DEAD, self._clock.now_ms())
                    self._groups.remove(group_id)
                await self._store.delete_group(group_id)
                results[group_id] = ErrorCode.NONE
        return results
