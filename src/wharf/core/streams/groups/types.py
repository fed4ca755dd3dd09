"""What the group coordinator hands back: plain, protocol-neutral result records.

Field names follow Kafka's JoinGroup/SyncGroup/LeaveGroup/DescribeGroups/ListGroups responses so
the Kafka front end can copy them across; ``error`` is an :class:`ErrorCode` whose value is the
Kafka error code. :class:`GroupState` lives in ``state.py`` with its transitions and is
re-exported here with the records that carry it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from wharf.core.streams.errors import ErrorCode
from wharf.core.streams.groups.state import GroupState

__all__ = [
    "GroupDescription",
    "GroupListing",
    "GroupState",
    "JoinResult",
    "JoinedMember",
    "LeaveMember",
    "LeaveResult",
    "MemberDescription",
    "SyncResult",
]

NO_GENERATION = -1


@dataclass(frozen=True, slots=True)
class JoinedMember:
    """One member as the leader sees it in its join result: id and subscription metadata."""

    member_id: str
    group_instance_id: str | None
    metadata: bytes


@dataclass(frozen=True, slots=True)
class JoinResult:
    error: ErrorCode
    member_id: str
    generation_id: int = NO_GENERATION
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str = ""
    # True when a static leader rejoined a stable group: it must not compute a new assignment.
    skip_assignment: bool = False
    # Every member with its metadata for the chosen protocol; filled for the leader only.
    members: tuple[JoinedMember, ...] = ()


@dataclass(frozen=True, slots=True)
class SyncResult:
    error: ErrorCode
    assignment: bytes = b""
    protocol_type: str | None = None
    protocol_name: str | None = None


@dataclass(frozen=True, slots=True)
class LeaveMember:
    """A member to remove: by ``member_id``, or by ``group_instance_id`` for static members."""

    member_id: str
    group_instance_id: str | None = None


@dataclass(frozen=True, slots=True)
class LeaveResult:
    error: ErrorCode
    members: tuple[tuple[LeaveMember, ErrorCode], ...] = ()


@dataclass(frozen=True, slots=True)
class MemberDescription:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    metadata: bytes  # empty unless the group is Stable (as Kafka reports it)
    assignment: bytes


@dataclass(frozen=True, slots=True)
class GroupDescription:
    group_id: str
    state: GroupState
    protocol_type: str
    protocol_name: str  # empty unless the group is Stable
    members: tuple[MemberDescription, ...] = field(default=())
    error: ErrorCode = ErrorCode.NONE


@dataclass(frozen=True, slots=True)
class GroupListing:
    group_id: str
    protocol_type: str
    state: GroupState
