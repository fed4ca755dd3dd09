"""A consumer group as the coordinator holds it in memory: its members and its state.

:class:`Member` and :class:`Group` are the records the coordinator's modules share (the
membership state machine, the committed-offsets facade, the admin operations and persistence);
:class:`GroupTable` holds the groups of one coordinator by id and drops a group once it has
neither members nor committed offsets. A group's state only changes through
:meth:`Group.move_to`, which asks the table in ``state.py`` first.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from wharf.core.clock import TimerHandle
from wharf.core.streams.groups.state import GroupState, check_transition
from wharf.core.streams.groups.store import GroupStore
from wharf.core.streams.groups.types import JoinResult, SyncResult

__all__ = ["Group", "GroupTable", "JoinFuture", "Member", "MemberArgs", "SyncFuture"]

JoinFuture = asyncio.Future[JoinResult]
SyncFuture = asyncio.Future[SyncResult]


@dataclass(eq=False)
class Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    join_future: JoinFuture | None = None
    sync_future: SyncFuture | None = None
    session_timer: TimerHandle | None = None

    def supports(self, protocol: str) -> bool:
        return any(name == protocol for name, _ in self.protocols)

    def metadata(self, protocol: str) -> bytes:
        for name, meta in self.protocols:
            if name == protocol:
                return meta
        return b""

    def same_protocols(self, protocols: Sequence[tuple[str, bytes]]) -> bool:
        return self.protocols == list(protocols)

    def cancel_session(self) -> None:
        if self.session_timer is not None:
            self.session_timer.cancel()
            self.session_timer = None

    def resolve_join(self, result: JoinResult) -> None:
        """Answer the member's parked join (if any) with ``result``."""
        if self.join_future is not None and not self.join_future.done():
            self.join_future.set_result(result)
        self.join_future = None

    def resolve_sync(self, result: SyncResult) -> None:
        """Answer the member's parked sync (if any) with ``result``."""
        if self.sync_future is not None and not self.sync_future.done():
            self.sync_future.set_result(result)
        self.sync_future = None


@dataclass(slots=True)
class MemberArgs:
    """What a join says about the member, applied to a new or an existing :class:`Member`."""

    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]

    def apply(self, member: Member) -> None:
        member.client_id = self.client_id
        member.client_host = self.client_host
        member.session_timeout_ms = self.session_timeout_ms
        member.rebalance_timeout_ms = self.rebalance_timeout_ms
        member.protocols = self.protocols

    def new_member(self, member_id: str, join_future: JoinFuture) -> Member:
        return Member(
            member_id,
            self.group_instance_id,
            self.client_id,
            self.client_host,
            self.session_timeout_ms,
            self.rebalance_timeout_ms,
            self.protocol_type,
            self.protocols,
            join_future=join_future,
        )


@dataclass(eq=False)
class Group:
    group_id: str
    state: GroupState = GroupState.EMPTY
    state_since_ms: int = 0
    generation_id: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str | None = None
    members: dict[str, Member] = field(default_factory=dict)
    static_members: dict[str, str] = field(default_factory=dict)  # instance id -> member id
    pending_members: dict[str, TimerHandle] = field(default_factory=dict)
    join_timer: TimerHandle | None = None
    initial_delay: bool = False  # in the delay of the first rebalance after Empty
    new_member_added: bool = False

    def move_to(self, state: GroupState, now_ms: int) -> None:
        """Change state; raises ``IllegalTransitionError`` if the table does not allow it."""
        check_transition(self.group_id, self.state, state)
        self.state = state
        self.state_since_ms = now_ms

    def all_joined(self) -> bool:
        return not self.pending_members and all(
            m.join_future is not None for m in self.members.values()
        )

    def candidate_protocols(self) -> set[str]:
        sets = [{name for name, _ in m.protocols} for m in self.members.values()]
        return set.intersection(*sets) if sets else set()

    def select_protocol(self) -> str:
        candidates = self.candidate_protocols()
        votes: Counter[str] = Counter()
        for member in self.members.values():
            votes[next(name for name, _ in member.protocols if name in candidates)] += 1
        # most votes wins; ties go to the protocol the earliest member prefers
        first = next(iter(self.members.values()))
        order = [name for name, _ in first.protocols if name in candidates]
        return max(order, key=lambda name: (votes[name], -order.index(name)))

    def max_rebalance_timeout_ms(self) -> int:
        return max((m.rebalance_timeout_ms for m in self.members.values()), default=0)

    def in_use(self) -> bool:
        """Whether the group has members, or ids handed out to members about to join."""
        return bool(self.members or self.pending_members)


class GroupTable:
    """The groups of one coordinator by id, over the store that knows their offsets."""

    def __init__(self, store: GroupStore) -> None:
        self._store = store
        self._groups: dict[str, Group] = {}

    def get(self, group_id: str) -> Group | None:
        return self._groups.get(group_id)

    def add(self, group: Group) -> Group:
        self._groups[group.group_id] = group
        return group

    def remove(self, group_id: str) -> None:
        del self._groups[group_id]

    def __contains__(self, group_id: str) -> bool:
        return group_id in self._groups

    def __iter__(self) -> Iterator[Group]:
        return iter(list(self._groups.values()))

    def clear(self) -> None:
        self._groups.clear()

    def forget_if_unused(self, group: Group) -> None:
        """Drop an Empty group with no members from memory (its offsets stay in the store)."""
        if (
            group.state is GroupState.EMPTY
            and not group.in_use()
            and self._groups.get(group.group_id) is group
            and not self._store.has_group(group.group_id)
        ):
            del self._groups[group.group_id]
