"""Kafka's classic consumer-group membership protocol, without the wire format.

How it works. Each group is a small state machine (all transitions live in this module)::

    Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
      ▲                 ▲        │                                   │ leader's sync
      │                 │        └─ nobody rejoined ─▶ Empty         ▼
      └── last member ──┴──── join with new metadata, leave, ◀──── Stable
          leaves/expires      session expiry, leader rejoin

* ``join_group`` parks the caller on a future until the join phase ends. The first rebalance of
  an empty group waits ``group_initial_rebalance_delay_ms``, extended by the same delay while new
  members keep arriving, capped at the rebalance timeout; later rebalances end as soon as every
  known member has rejoined, or when the longest rebalance timeout of the members expires (the
  members that did not rejoin are then removed). The generation then increases, the protocol is
  chosen by vote among the protocols every member supports, and every waiting member gets its
  result; the leader (the first member to join, or the next one if it left) also gets everyone's
  metadata.
* ``sync_group`` parks followers until the leader sends the assignments; the group is Stable.
* Every member has a session timer (the injected clock's ``call_later``, like every timer
  here), restarted by each join, sync, heartbeat and offset commit; when it fires the member is
  removed, unless it is waiting in a join or sync (then the rebalance timeout governs it, as in
  Kafka).
* Static members (``group_instance_id``) keep their identity across restarts: a join with a known
  instance id and no member id replaces the old member (fencing the old id) without a rebalance
  when the group is Stable and the metadata would not change the chosen protocol.
* Committed offsets are durable in the :class:`OffsetStore`; a group that only has committed
  offsets shows as Empty. Each time a group becomes Stable its membership is saved there too
  (``group_snapshot.py``), and :meth:`GroupCoordinator.start` restores it after a restart, so
  live members carry on in their generation without a rebalance.

Results carry :class:`ErrorCode` values equal to Kafka's error codes.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial

from wharf.core.clock import Clock, TimerHandle
from wharf.core.config import BrokerConfig
from wharf.core.streams.errors import ErrorCode
from wharf.core.streams.groups.snapshot import (
    SNAPSHOT_VERSION,
    GroupSnapshot,
    MemberSnapshot,
    decode_snapshot,
    encode_snapshot,
)
from wharf.core.streams.groups.subscription import subscribed_topics
from wharf.core.streams.groups.types import (
    NO_GENERATION,
    GroupDescription,
    GroupListing,
    GroupState,
    JoinedMember,
    JoinResult,
    LeaveMember,
    LeaveResult,
    MemberDescription,
    SyncResult,
)
from wharf.core.streams.offsets import OffsetAndMetadata, OffsetStore, TopicPartition
from wharf.errors import StorageError

__all__ = ["GroupCoordinator", "MAX_OFFSET_METADATA_BYTES"]

MAX_OFFSET_METADATA_BYTES = 4096  # Kafka's offset.metadata.max.bytes default

log = logging.getLogger(__name__)

_JOIN_RESULT = asyncio.Future[JoinResult]
_SYNC_RESULT = asyncio.Future[SyncResult]


@dataclass(eq=False)
class _Member:
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]
    assignment: bytes = b""
    join_future: _JOIN_RESULT | None = None
    sync_future: _SYNC_RESULT | None = None
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


@dataclass(eq=False)
class _Group:
    group_id: str
    state: GroupState = GroupState.EMPTY
    state_since_ms: int = 0
    generation_id: int = 0
    protocol_type: str | None = None
    protocol_name: str | None = None
    leader_id: str | None = None
    members: dict[str, _Member] = field(default_factory=dict)
    static_members: dict[str, str] = field(default_factory=dict)  # instance id -> member id
    pending_members: dict[str, TimerHandle] = field(default_factory=dict)
    join_timer: TimerHandle | None = None
    initial_delay: bool = False  # in the delay of the first rebalance after Empty
    new_member_added: bool = False

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


class GroupCoordinator:
    """All consumer groups of the broker; see the module docstring."""

    def __init__(
        self,
        config: BrokerConfig,
        clock: Clock,
        offsets: OffsetStore,
        *,
        partition_exists: Callable[[str, int], bool] | None = None,
    ) -> None:
        self._config = config
        self._clock = clock
        self.offsets = offsets
        self._partition_exists = partition_exists
        self._groups: dict[str, _Group] = {}
        self._persisting: set[asyncio.Task[None]] = set()
        self.rebalances = 0  # completed join phases, for metrics

    def start(self) -> None:
        """Restore the groups that were Stable when the broker stopped (needs a running loop)."""
        now = self._clock.now_ms()
        for group_id, data in self.offsets.group_metadata().items():
            snapshot = decode_snapshot(data)
            if snapshot is None or not snapshot.members:
                log.warning("ignoring unreadable membership snapshot of group %r", group_id)
                continue
            group = _Group(
                group_id,
                state=GroupState.STABLE,
                state_since_ms=now,
                generation_id=snapshot.generation_id,
                protocol_type=snapshot.protocol_type,
                protocol_name=snapshot.protocol_name,
                leader_id=snapshot.leader_id,
            )
            for m in snapshot.members:
                member = _Member(
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
                group.members[m.member_id] = member
                if m.group_instance_id is not None:
                    group.static_members[m.group_instance_id] = m.member_id
                self._restart_session(group, member)
            if group.leader_id not in group.members:
                group.leader_id = next(iter(group.members))
            self._groups[group_id] = group

    # ------------------------------------------------------------------ join

    async def join_group(
        self,
        group_id: str,
        member_id: str,
        *,
        protocol_type: str,
        protocols: Sequence[tuple[str, bytes]],
        session_timeout_ms: int,
        rebalance_timeout_ms: int | None = None,
        group_instance_id: str | None = None,
        client_id: str = "",
        client_host: str = "",
        require_known_member_id: bool = True,
        supports_skip_assignment: bool = True,
    ) -> JoinResult:
        """Join (or rejoin) ``group_id``; returns when the join phase completes.

        ``require_known_member_id`` asks new dynamic members to come back with the generated id
        (the JoinGroup v4+ round trip; the result has ``MEMBER_ID_REQUIRED``).
        ``supports_skip_assignment`` says the client understands ``skip_assignment`` (JoinGroup
        v9+): a static leader replacing itself in a Stable group then gets the members with
        ``skip_assignment``; older clients get no members, so they compute no assignment.
        """
        rebalance_ms = session_timeout_ms if rebalance_timeout_ms is None else rebalance_timeout_ms
        if not group_id:
            return JoinResult(ErrorCode.INVALID_GROUP_ID, member_id)
        if not (
            self._config.group_min_session_timeout_ms
            <= session_timeout_ms
            <= self._config.group_max_session_timeout_ms
        ):
            return JoinResult(ErrorCode.INVALID_SESSION_TIMEOUT, member_id)
        if not protocol_type or not protocols:
            return JoinResult(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, member_id)
        group = self._groups.get(group_id)
        if group is None:
            if member_id:
                return JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member_id)
            group = self._groups[group_id] = _Group(group_id, state_since_ms=self._clock.now_ms())
        if not self._protocols_compatible(group, protocol_type, protocols):
            return JoinResult(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, member_id)
        loop = asyncio.get_running_loop()
        future: _JOIN_RESULT = loop.create_future()
        member_args = _MemberArgs(
            group_instance_id,
            client_id,
            client_host,
            session_timeout_ms,
            rebalance_ms,
            protocol_type,
            list(protocols),
        )
        if not member_id:
            if group_instance_id is not None:
                self._join_static(group, member_args, future, supports_skip_assignment)
            elif require_known_member_id:
                new_id = self._new_member_id(client_id)
                group.pending_members[new_id] = self._clock.call_later(
                    session_timeout_ms / 1000, partial(self._expire_pending, group, new_id)
                )
                return JoinResult(ErrorCode.MEMBER_ID_REQUIRED, new_id)
            else:
                self._add_member(group, self._new_member_id(client_id), member_args, future)
        else:
            error = self._join_known(group, member_id, member_args, future)
            if error is not ErrorCode.NONE:
                self._forget_if_unused(group)
                return JoinResult(error, member_id)
        return await future

    def _protocols_compatible(
        self, group: _Group, protocol_type: str, protocols: Sequence[tuple[str, bytes]]
    ) -> bool:
        if not group.members:
            return True
        if protocol_type != group.protocol_type:
            return False
        return bool(group.candidate_protocols() & {name for name, _ in protocols})

    def _join_static(
        self, group: _Group, args: _MemberArgs, future: _JOIN_RESULT, skip_ok: bool
    ) -> None:
        assert args.group_instance_id is not None
        old_id = group.static_members.get(args.group_instance_id)
        new_id = self._new_member_id(args.group_instance_id)
        if old_id is None or old_id not in group.members:
            self._add_member(group, new_id, args, future)
            return
        old = group.members.pop(old_id)
        self._cancel_timer(old)
        self._resolve_join(old, JoinResult(ErrorCode.FENCED_INSTANCE_ID, old_id))
        self._resolve_sync(old, SyncResult(ErrorCode.FENCED_INSTANCE_ID))
        old.member_id = new_id
        group.members[new_id] = old
        group.static_members[args.group_instance_id] = new_id
        if group.leader_id == old_id:
            group.leader_id = new_id
        args.apply(old)
        if group.state is GroupState.STABLE:
            if group.select_protocol() == group.protocol_name:
                # same protocol for the next generation: take over the old member's assignment
                self._restart_session(group, old)
                skip = skip_ok and group.leader_id == new_id
                future.set_result(self._join_result(group, old, members=skip, skip_assignment=skip))
                self._persist(group)
                return
            old.join_future = future
            self._prepare_rebalance(group)
        elif group.state is GroupState.COMPLETING_REBALANCE:
            old.join_future = future
            self._prepare_rebalance(group)
        else:
            old.join_future = future
            self._maybe_complete_join(group)

    def _join_known(
        self, group: _Group, member_id: str, args: _MemberArgs, future: _JOIN_RESULT
    ) -> ErrorCode:
        if args.group_instance_id is not None:
            known = group.static_members.get(args.group_instance_id)
            if known is not None and known != member_id:
                return ErrorCode.FENCED_INSTANCE_ID
        pending = group.pending_members.pop(member_id, None)
        if pending is not None:
            pending.cancel()
            self._add_member(group, member_id, args, future)
            return ErrorCode.NONE
        member = group.members.get(member_id)
        if member is None or group.state in (GroupState.EMPTY, GroupState.DEAD):
            return ErrorCode.UNKNOWN_MEMBER_ID
        if group.state is GroupState.PREPARING_REBALANCE:
            self._update_member(group, member, args, future)
            self._maybe_complete_join(group)
        elif group.state is GroupState.COMPLETING_REBALANCE:
            if member.same_protocols(args.protocols):
                # the member lost our join response: send the same generation again
                self._restart_session(group, member)
                future.set_result(self._join_result(group, member, members=True))
            else:
                self._update_member(group, member, args, future)
                self._prepare_rebalance(group)
        elif member_id == group.leader_id or not member.same_protocols(args.protocols):
            self._update_member(group, member, args, future)
            self._prepare_rebalance(group)
        else:
            self._restart_session(group, member)
            future.set_result(self._join_result(group, member, members=False))
        return ErrorCode.NONE

    def _add_member(
        self, group: _Group, member_id: str, args: _MemberArgs, future: _JOIN_RESULT
    ) -> None:
        member = _Member(
            member_id,
            args.group_instance_id,
            args.client_id,
            args.client_host,
            args.session_timeout_ms,
            args.rebalance_timeout_ms,
            args.protocol_type,
            args.protocols,
            join_future=future,
        )
        if not group.members:
            group.protocol_type = args.protocol_type
        group.members[member_id] = member
        if args.group_instance_id is not None:
            group.static_members[args.group_instance_id] = member_id
        if group.leader_id is None:
            group.leader_id = member_id
        group.new_member_added = True
        self._restart_session(group, member)
        if group.state is GroupState.PREPARING_REBALANCE:
            self._maybe_complete_join(group)
        else:
            self._prepare_rebalance(group)

    def _update_member(
        self, group: _Group, member: _Member, args: _MemberArgs, future: _JOIN_RESULT
    ) -> None:
        if member.join_future is not None and not member.join_future.done():
            # a repeated join replaces the earlier one, whose caller must try again
            member.join_future.set_result(
                JoinResult(ErrorCode.REBALANCE_IN_PROGRESS, member.member_id)
            )
        args.apply(member)
        member.join_future = future
        self._restart_session(group, member)

    # ------------------------------------------------------------------ rebalance

    def _prepare_rebalance(self, group: _Group) -> None:
        if group.state is GroupState.COMPLETING_REBALANCE:
            for member in group.members.values():
                member.assignment = b""
                self._resolve_sync(member, SyncResult(ErrorCode.REBALANCE_IN_PROGRESS))
        if group.join_timer is not None:
            group.join_timer.cancel()
        if group.state is GroupState.EMPTY:
            delay_ms = self._config.group_initial_rebalance_delay_ms
            remaining_ms = max(group.max_rebalance_timeout_ms() - delay_ms, 0)
            group.new_member_added = False
            group.initial_delay = True
            group.join_timer = self._clock.call_later(
                delay_ms / 1000, partial(self._initial_delay_expired, group, delay_ms, remaining_ms)
            )
        else:
            group.initial_delay = False
            group.join_timer = self._clock.call_later(
                group.max_rebalance_timeout_ms() / 1000, partial(self._complete_join, group)
            )
        self._set_state(group, GroupState.PREPARING_REBALANCE)
        self._maybe_complete_join(group)

    def _initial_delay_expired(self, group: _Group, delay_ms: int, remaining_ms: int) -> None:
        group.join_timer = None
        if group.new_member_added and remaining_ms > 0:
            group.new_member_added = False
            next_delay = min(delay_ms, remaining_ms)
            group.join_timer = self._clock.call_later(
                next_delay / 1000,
                partial(self._initial_delay_expired, group, delay_ms, remaining_ms - next_delay),
            )
            return
        group.initial_delay = False
        self._complete_join(group)

    def _maybe_complete_join(self, group: _Group) -> None:
        if group.state is not GroupState.PREPARING_REBALANCE or not group.all_joined():
            return
        if group.initial_delay:
            return  # the first rebalance of an empty group waits out its delay
        if group.join_timer is not None:
            group.join_timer.cancel()
            group.join_timer = None
        self._complete_join(group)

    def _complete_join(self, group: _Group) -> None:
        group.initial_delay = False
        if group.join_timer is not None:
            group.join_timer.cancel()
            group.join_timer = None
        if group.state is not GroupState.PREPARING_REBALANCE:
            return
        for member in [m for m in group.members.values() if m.join_future is None]:
            self._remove_member(group, member)
        for pending_id, timer in list(group.pending_members.items()):
            timer.cancel()
            del group.pending_members[pending_id]
        group.generation_id += 1
        self.rebalances += 1
        if not group.members:
            group.protocol_name = None
            group.protocol_type = None
            self._set_state(group, GroupState.EMPTY)
            self._persist(group)
            self._forget_if_unused(group)
            return
        group.protocol_name = group.select_protocol()
        if group.leader_id not in group.members:
            group.leader_id = next(iter(group.members))
        self._set_state(group, GroupState.COMPLETING_REBALANCE)
        for member in group.members.values():
            self._resolve_join(member, self._join_result(group, member, members=True))
            self._restart_session(group, member)

    def _join_result(
        self, group: _Group, member: _Member, *, members: bool, skip_assignment: bool = False
    ) -> JoinResult:
        is_leader = member.member_id == group.leader_id
        protocol = group.protocol_name or ""
        listed: tuple[JoinedMember, ...] = ()
        if members and is_leader:
            listed = tuple(
                JoinedMember(m.member_id, m.group_instance_id, m.metadata(protocol))
                for m in group.members.values()
            )
        return JoinResult(
            ErrorCode.NONE,
            member.member_id,
            generation_id=group.generation_id,
            protocol_type=group.protocol_type,
            protocol_name=group.protocol_name,
            leader_id=group.leader_id or "",
            skip_assignment=skip_assignment,
            members=listed,
        )

    # ------------------------------------------------------------------ sync

    async def sync_group(
        self,
        group_id: str,
        member_id: str,
        generation_id: int,
        *,
        assignments: Mapping[str, bytes] | None = None,
        group_instance_id: str | None = None,
        protocol_type: str | None = None,
        protocol_name: str | None = None,
    ) -> SyncResult:
        """Deliver the leader's ``assignments``; every member gets its own share."""
        group = self._groups.get(group_id)
        if group is None:
            return SyncResult(ErrorCode.UNKNOWN_MEMBER_ID)
        error = self._check_member(group, member_id, group_instance_id)
        if error is not ErrorCode.NONE:
            return SyncResult(error)
        if generation_id != group.generation_id:
            return SyncResult(ErrorCode.ILLEGAL_GENERATION)
        if (protocol_type is not None and protocol_type != group.protocol_type) or (
            protocol_name is not None and protocol_name != group.protocol_name
        ):
            return SyncResult(ErrorCode.INCONSISTENT_GROUP_PROTOCOL)
        member = group.members[member_id]
        if group.state is GroupState.PREPARING_REBALANCE:
            return SyncResult(ErrorCode.REBALANCE_IN_PROGRESS)
        if group.state is GroupState.STABLE:
            self._restart_session(group, member)
            return self._sync_result(group, member)
        # CompletingRebalance
        future: _SYNC_RESULT = asyncio.get_running_loop().create_future()
        member.sync_future = future
        self._restart_session(group, member)
        if member_id == group.leader_id:
            given = assignments or {}
            for m in group.members.values():
                m.assignment = given.get(m.member_id, b"")
            self._set_state(group, GroupState.STABLE)
            self._persist(group)
            for m in group.members.values():
                self._resolve_sync(m, self._sync_result(group, m))
        return await future

    def _sync_result(self, group: _Group, member: _Member) -> SyncResult:
        return SyncResult(
            ErrorCode.NONE, member.assignment, group.protocol_type, group.protocol_name
        )

    # ------------------------------------------------------------------ heartbeat, leave

    def heartbeat(
        self,
        group_id: str,
        member_id: str,
        generation_id: int,
        *,
        group_instance_id: str | None = None,
    ) -> ErrorCode:
        """Keep the member's session alive; tells it when it must rejoin."""
        group = self._groups.get(group_id)
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        error = self._check_member(group, member_id, group_instance_id)
        if error is not ErrorCode.NONE:
            return error
        if group.state is GroupState.EMPTY:
            return ErrorCode.UNKNOWN_MEMBER_ID
        if generation_id != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        self._restart_session(group, group.members[member_id])
        if group.state is GroupState.PREPARING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        return ErrorCode.NONE

    def leave_group(self, group_id: str, members: Sequence[LeaveMember]) -> LeaveResult:
        """Remove members (by member id, or by instance id for static members)."""
        group = self._groups.get(group_id)
        if group is None:
            return LeaveResult(
                ErrorCode.NONE, tuple((m, ErrorCode.UNKNOWN_MEMBER_ID) for m in members)
            )
        results: list[tuple[LeaveMember, ErrorCode]] = []
        for leaving in members:
            results.append((leaving, self._leave_one(group, leaving)))
        self._forget_if_unused(group)
        return LeaveResult(ErrorCode.NONE, tuple(results))

    def _leave_one(self, group: _Group, leaving: LeaveMember) -> ErrorCode:
        member_id = leaving.member_id
        if leaving.group_instance_id is not None:
            known = group.static_members.get(leaving.group_instance_id)
            if known is None:
                return ErrorCode.UNKNOWN_MEMBER_ID
            if member_id and member_id != known:
                return ErrorCode.FENCED_INSTANCE_ID
            member_id = known
        timer = group.pending_members.pop(member_id, None)
        if timer is not None:
            timer.cancel()
            self._maybe_complete_join(group)
            return ErrorCode.NONE
        member = group.members.get(member_id)
        if member is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        self._remove_member_and_rebalance(group, member)
        return ErrorCode.NONE

    # ------------------------------------------------------------------ offsets

    async def commit_offsets(
        self,
        group_id: str,
        offsets: Mapping[TopicPartition, OffsetAndMetadata],
        *,
        member_id: str = "",
        generation_id: int = NO_GENERATION,
        group_instance_id: str | None = None,
    ) -> dict[TopicPartition, ErrorCode]:
        """Store committed offsets durably; returns a code per partition.

        ``generation_id`` -1 with an empty member id is a commit from outside group management
        (a consumer with manual assignment), accepted while the group has no members.
        The commit timestamp is the broker clock's.
        """
        error = self._commit_error(group_id, member_id, generation_id, group_instance_id)
        if error is not ErrorCode.NONE:
            return dict.fromkeys(offsets, error)
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
            await self.offsets.commit(group_id, accepted)
            if group_id not in self._groups:
                self._groups[group_id] = _Group(group_id, state_since_ms=now)
        return results

    def _commit_error(
        self, group_id: str, member_id: str, generation_id: int, group_instance_id: str | None
    ) -> ErrorCode:
        if not group_id:
            return ErrorCode.INVALID_GROUP_ID
        group = self._groups.get(group_id)
        if group is None:
            return ErrorCode.NONE if generation_id < 0 else ErrorCode.ILLEGAL_GENERATION
        if generation_id < 0 and group.state is GroupState.EMPTY:
            return ErrorCode.NONE
        if group.state is GroupState.COMPLETING_REBALANCE:
            return ErrorCode.REBALANCE_IN_PROGRESS
        error = self._check_member(group, member_id, group_instance_id)
        if error is not ErrorCode.NONE:
            return error
        if generation_id != group.generation_id:
            return ErrorCode.ILLEGAL_GENERATION
        self._restart_session(group, group.members[member_id])
        return ErrorCode.NONE

    def fetch_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, OffsetAndMetadata]:
        """Committed offsets of ``group_id`` (all of them when ``partitions`` is None).

        Partitions without a committed offset are absent from the result.
        """
        return self.offsets.fetch(group_id, partitions)

    async def delete_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition]
    ) -> tuple[ErrorCode, dict[TopicPartition, ErrorCode]]:
        """OffsetDelete: forget committed offsets, except for topics live members consume."""
        wanted = list(partitions)
        group = self._groups.get(group_id)
        if group is None and not self.offsets.has_group(group_id):
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
        await self.offsets.delete(
            group_id, [tp for tp, code in results.items() if code is ErrorCode.NONE]
        )
        return ErrorCode.NONE, results

    async def expire_offsets(self) -> int:
        """Drop offsets of groups without members older than ``offsets_retention_ms``."""

        def empty_since(group_id: str) -> int | None:
            group = self._groups.get(group_id)
            if group is None:
                return 0
            return group.state_since_ms if group.state is GroupState.EMPTY else None

        removed = await self.offsets.expire(
            self._clock.now_ms(), self._config.offsets_retention_ms, empty_since
        )
        for group in list(self._groups.values()):
            self._forget_if_unused(group)
        return removed

    # ------------------------------------------------------------------ describe, list, delete

    def describe_group(self, group_id: str) -> GroupDescription:
        group = self._groups.get(group_id)
        if group is None:
            if self.offsets.has_group(group_id):
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
        listings = [
            GroupListing(g.group_id, g.protocol_type or "", g.state) for g in self._groups.values()
        ]
        listings += [
            GroupListing(group_id, "", GroupState.EMPTY)
            for group_id in self.offsets.groups()
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
            elif group is not None and (group.members or group.pending_members):
                results[group_id] = ErrorCode.NON_EMPTY_GROUP
            elif group is None and not self.offsets.has_group(group_id):
                results[group_id] = ErrorCode.GROUP_ID_NOT_FOUND
            else:
                if group is not None:
                    self._set_state(group, GroupState.DEAD)
                    del self._groups[group_id]
                await self.offsets.delete_group(group_id)
                results[group_id] = ErrorCode.NONE
        return results

    async def wait_persisted(self) -> None:
        """Wait until every membership snapshot written so far is stored."""
        while self._persisting:
            await asyncio.gather(*self._persisting)

    def _persist(self, group: _Group) -> None:
        """Store the group's membership as of now (a Stable group) or drop it (Empty)."""
        data = None
        if group.state is GroupState.STABLE:
            snapshot = GroupSnapshot(
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
            data = encode_snapshot(snapshot)
        # tasks reach the store's lock in creation order, so snapshots are stored in order
        task = asyncio.get_running_loop().create_task(self._store(group.group_id, data))
        self._persisting.add(task)
        task.add_done_callback(self._persisting.discard)

    async def _store(self, group_id: str, data: bytes | None) -> None:
        try:
            await self.offsets.store_group_metadata(group_id, data)
        except StorageError:
            log.exception("membership of group %r not saved; it will rebalance after a restart",
                          group_id)

    def close(self) -> None:
        """Cancel every timer and wake every parked caller (broker shutdown)."""
        for group in self._groups.values():
            if group.join_timer is not None:
                group.join_timer.cancel()
            for timer in group.pending_members.values():
                timer.cancel()
            for member in group.members.values():
                self._cancel_timer(member)
                self._resolve_join(
                    member, JoinResult(ErrorCode.COORDINATOR_NOT_AVAILABLE, member.member_id)
                )
                self._resolve_sync(member, SyncResult(ErrorCode.COORDINATOR_NOT_AVAILABLE))
        self._groups.clear()

    # ------------------------------------------------------------------ sessions

    def _restart_session(self, group: _Group, member: _Member) -> None:
        self._cancel_timer(member)
        member.session_timer = self._clock.call_later(
            member.session_timeout_ms / 1000, partial(self._session_expired, group, member)
        )

    def _session_expired(self, group: _Group, member: _Member) -> None:
        member.session_timer = None
        if group.members.get(member.member_id) is not member:
            return
        if (member.join_future is not None and group.state is GroupState.PREPARING_REBALANCE) or (
            member.sync_future is not None and not member.sync_future.done()
        ):
            self._restart_session(group, member)  # the rebalance timeout governs it now
            return
        self._remove_member_and_rebalance(group, member)
        self._forget_if_unused(group)

    def _expire_pending(self, group: _Group, member_id: str) -> None:
        if group.pending_members.pop(member_id, None) is not None:
            self._maybe_complete_join(group)
            self._forget_if_unused(group)

    # ------------------------------------------------------------------ removal

    def _remove_member_and_rebalance(self, group: _Group, member: _Member) -> None:
        self._resolve_join(member, JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member.member_id))
        self._resolve_sync(member, SyncResult(ErrorCode.UNKNOWN_MEMBER_ID))
        self._remove_member(group, member)
        if group.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(group)
        elif group.state is GroupState.PREPARING_REBALANCE:
            self._maybe_complete_join(group)

    def _remove_member(self, group: _Group, member: _Member) -> None:
        self._cancel_timer(member)
        del group.members[member.member_id]
        if member.group_instance_id is not None:
            if group.static_members.get(member.group_instance_id) == member.member_id:
                del group.static_members[member.group_instance_id]
        if group.leader_id == member.member_id:
            group.leader_id = next(iter(group.members), None)

    def _forget_if_unused(self, group: _Group) -> None:
        """Drop an Empty group with no members from memory (its offsets stay in the store)."""
        if (
            group.state is GroupState.EMPTY
            and not group.members
            and not group.pending_members
            and self._groups.get(group.group_id) is group
            and not self.offsets.has_group(group.group_id)
        ):
            del self._groups[group.group_id]

    # ------------------------------------------------------------------ helpers

    def _check_member(
        self, group: _Group, member_id: str, group_instance_id: str | None
    ) -> ErrorCode:
        if group_instance_id is not None:
            known = group.static_members.get(group_instance_id)
            if known is not None and known != member_id:
                return ErrorCode.FENCED_INSTANCE_ID
        if member_id not in group.members:
            return ErrorCode.UNKNOWN_MEMBER_ID
        return ErrorCode.NONE

    def _set_state(self, group: _Group, state: GroupState) -> None:
        group.state = state
        group.state_since_ms = self._clock.now_ms()

    @staticmethod
    def _cancel_timer(member: _Member) -> None:
        if member.session_timer is not None:
            member.session_timer.cancel()
            member.session_timer = None

    @staticmethod
    def _resolve_join(member: _Member, result: JoinResult) -> None:
        if member.join_future is not None and not member.join_future.done():
            member.join_future.set_result(result)
        member.join_future = None

    @staticmethod
    def _resolve_sync(member: _Member, result: SyncResult) -> None:
        if member.sync_future is not None and not member.sync_future.done():
            member.sync_future.set_result(result)
        member.sync_future = None

    @staticmethod
    def _new_member_id(prefix: str) -> str:
        return f"{prefix or 'member'}-{uuid.uuid4()}"


@dataclass(slots=True)
class _MemberArgs:
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocol_type: str
    protocols: list[tuple[str, bytes]]

    def apply(self, member: _Member) -> None:
        member.client_id = self.client_id
        member.client_host = self.client_host
        member.session_timeout_ms = self.session_timeout_ms
        member.rebalance_timeout_ms = self.rebalance_timeout_ms
        member.protocols = self.protocols
