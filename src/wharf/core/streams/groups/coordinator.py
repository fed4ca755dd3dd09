"""Kafka's classic consumer-group membership protocol, without the wire format.

How it works. Each group is a small state machine; every transition it may take is in the table
of ``state.py``, which :meth:`Group.move_to` asks before each one (an illegal move raises)::

    Empty ──join──▶ PreparingRebalance ──all joined / timeout──▶ CompletingRebalance
      │ ▲               ▲        │                                   │ leader's sync
      │ │               │        └─ nobody rejoined ─▶ Empty         ▼
      │ └─ last member ─┴──── join with new metadata, leave, ◀──── Stable
      │    leaves/expires     session expiry, leader rejoin
      └─ delete ─▶ Dead

* ``join_group`` parks the caller on a future until the join phase ends. The first rebalance of
  an empty group waits ``group_initial_rebalance_delay_ms``, extended by the same delay while new
  members keep arriving, capped at the rebalance timeout; later rebalances end as soon as every
  known member has rejoined, or when the longest rebalance timeout of the members expires (the
  members that did not rejoin are then removed). The generation then increases, the protocol is
  chosen by vote among the protocols every member supports, and every waiting member gets its
  result; the leader (the first member to join, or the next one if it left) also gets everyone's
  metadata.
* ``sync_group`` parks followers until the leader sends the assignments; the group is Stable.
* Every member has a session timer, restarted by each join, sync, heartbeat and offset commit;
  when it fires the member is removed, unless it is waiting in a join or sync (then the
  rebalance timeout governs it, as in Kafka). Every timer here (sessions, join phases, member
  ids handed out but not yet used) is the injected clock's ``call_later``, so tests drive them
  with a virtual clock.
* Static members (``group_instance_id``) keep their identity across restarts: a join with a known
  instance id and no member id replaces the old member (fencing the old id) without a rebalance
  when the group is Stable and the metadata would not change the chosen protocol.

The rest sits beside this module: the in-memory records in ``group.py``; committed offsets
(``committed.py``, durable in the :class:`OffsetStore`; a commit is accepted here for its member
and generation first); list/describe/delete in ``admin.py``; and ``persistence.py``, which saves
a group's membership each time it becomes Stable so that :meth:`GroupCoordinator.start` can
restore it after a restart and live members carry on in their generation without a rebalance.

In a cluster (a :class:`GroupPlacement` given), each node coordinates the groups that
rendezvous hashing gives it (``placement.py``), and only once it has claimed them in the
database; :meth:`GroupCoordinator.ensure_coordinator` claims on first use (and restores the
group's last snapshot, so live members carry on in their generation), and answers
``NOT_COORDINATOR`` for another node's groups. The async calls check it themselves; the
synchronous ones answer ``NOT_COORDINATOR`` for a group not claimed, so callers ensure first.
Each request, and a sweep every :data:`PLACEMENT_CHECK_S`, drops the groups that moved: their
parked members are answered ``NOT_COORDINATOR`` and find the new coordinator.

Results carry :class:`ErrorCode` values equal to Kafka's error codes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial

from wharf.core.clock import Clock, TimerHandle
from wharf.core.config import BrokerConfig
from wharf.core.streams.errors import ErrorCode, NotCoordinatorError
from wharf.core.streams.groups.admin import GroupAdmin
from wharf.core.streams.groups.committed import CommittedOffsets
from wharf.core.streams.groups.group import (
    Group,
    GroupTable,
    JoinFuture,
    Member,
    MemberArgs,
    SyncFuture,
)
from wharf.core.streams.groups.persistence import GroupPersistence
from wharf.core.streams.groups.placement import GroupPlacement
from wharf.core.streams.groups.state import GroupState
from wharf.core.streams.groups.store import GroupStore
from wharf.core.streams.groups.types import (
    NO_GENERATION,
    GroupDescription,
    GroupListing,
    JoinedMember,
    JoinResult,
    LeaveMember,
    LeaveResult,
    SyncResult,
)
from wharf.core.streams.offsets import OffsetAndMetadata, TopicPartition

__all__ = ["PLACEMENT_CHECK_S", "GroupCoordinator"]

PLACEMENT_CHECK_S = 1.0


class GroupCoordinator:
    """All consumer groups of the broker; see the module docstring."""

    def __init__(
        self,
        config: BrokerConfig,
        clock: Clock,
        offsets: GroupStore,
        *,
        partition_exists: Callable[[str, int], bool] | None = None,
        placement: GroupPlacement | None = None,
    ) -> None:
        """``placement``: in a cluster, which groups this node coordinates (``offsets`` is
        then the cluster's store)."""
        self._config = config
        self._clock = clock
        self.offsets = offsets
        self._groups = GroupTable(offsets)
        self._committed = CommittedOffsets(
            config, clock, offsets, self._groups, partition_exists
        )
        self._admin = GroupAdmin(clock, offsets, self._groups)
        self._persistence = GroupPersistence(offsets)
        self._placement = placement
        self._placement_timer: TimerHandle | None = None
        self.rebalances = 0  # completed join phases, for metrics

    def start(self) -> None:
        """Restore the groups that were Stable when the broker stopped (needs a running loop);
        in a cluster, start the sweep of groups that moved instead."""
        if self._placement is not None:
            self._schedule_placement_check()
            return
        for group in self._persistence.restore(self._clock.now_ms()):
            self._adopt(group)

    def _adopt(self, group: Group) -> None:
        self._groups.add(group)
        for member in group.members.values():
            self._restart_session(group, member)

    # ------------------------------------------------------------------ placement (cluster)

    async def ensure_coordinator(self, group_id: str) -> ErrorCode:
        """``NONE`` when this node coordinates ``group_id`` (always on a single node),
        claiming the group first in a cluster; else ``NOT_COORDINATOR`` or
        ``COORDINATOR_NOT_AVAILABLE``."""
        if self._placement is None or not group_id:
            return ErrorCode.NONE
        self._drop_moved()
        error, claimed = await self._placement.acquire(group_id)
        if claimed and group_id not in self._groups:
            group = self._persistence.restore_group(group_id, self._clock.now_ms())
            if group is not None:
                self._adopt(group)
        return error

    def _coordinates(self, group_id: str) -> bool:
        return self._placement is None or not group_id or self._placement.holds(group_id)

    def _drop_moved(self) -> None:
        if self._placement is None:
            return
        stale = set(self._placement.moved())
        stale.update(g.group_id for g in self._groups if not self._placement.holds(g.group_id))
        for group_id in stale:
            self._drop_group(group_id)
        self._placement.retry_releases()

    def _drop_group(self, group_id: str) -> None:
        """This node no longer coordinates the group: forget it; parked members are told."""
        assert self._placement is not None
        group = self._groups.get(group_id)
        if group is not None:
            self._shut_group(group, ErrorCode.NOT_COORDINATOR)
            self._groups.remove(group_id)
        self._placement.drop(group_id)

    def _schedule_placement_check(self) -> None:
        self._placement_timer = self._clock.call_later(PLACEMENT_CHECK_S, self._placement_check)

    def _placement_check(self) -> None:
        self._drop_moved()
        self._schedule_placement_check()

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
        placed = await self.ensure_coordinator(group_id)
        if placed is not ErrorCode.NONE:
            return JoinResult(placed, member_id)
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
            group = self._groups.add(Group(group_id, state_since_ms=self._clock.now_ms()))
        if not self._protocols_compatible(group, protocol_type, protocols):
            return JoinResult(ErrorCode.INCONSISTENT_GROUP_PROTOCOL, member_id)
        future: JoinFuture = asyncio.get_running_loop().create_future()
        member_args = MemberArgs(
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
                self._groups.forget_if_unused(group)
                return JoinResult(error, member_id)
        return await future

    @staticmethod
    def _protocols_compatible(
        group: Group, protocol_type: str, protocols: Sequence[tuple[str, bytes]]
    ) -> bool:
        if not group.members:
            return True
        if protocol_type != group.protocol_type:
            return False
        return bool(group.candidate_protocols() & {name for name, _ in protocols})

    def _join_static(
        self, group: Group, args: MemberArgs, future: JoinFuture, skip_ok: bool
    ) -> None:
        assert args.group_instance_id is not None
        old_id = group.static_members.get(args.group_instance_id)
        new_id = self._new_member_id(args.group_instance_id)
        if old_id is None or old_id not in group.members:
            self._add_member(group, new_id, args, future)
            return
        old = group.members.pop(old_id)
        old.cancel_session()
        old.resolve_join(JoinResult(ErrorCode.FENCED_INSTANCE_ID, old_id))
        old.resolve_sync(SyncResult(ErrorCode.FENCED_INSTANCE_ID))
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
                future.set_result(_join_result(group, old, members=skip, skip_assignment=skip))
                self._persistence.save(group)
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
        self, group: Group, member_id: str, args: MemberArgs, future: JoinFuture
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
                future.set_result(_join_result(group, member, members=True))
            else:
                self._update_member(group, member, args, future)
                self._prepare_rebalance(group)
        elif member_id == group.leader_id or not member.same_protocols(args.protocols):
            self._update_member(group, member, args, future)
            self._prepare_rebalance(group)
        else:
            self._restart_session(group, member)
            future.set_result(_join_result(group, member, members=False))
        return ErrorCode.NONE

    def _add_member(
        self, group: Group, member_id: str, args: MemberArgs, future: JoinFuture
    ) -> None:
        member = args.new_member(member_id, future)
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
        self, group: Group, member: Member, args: MemberArgs, future: JoinFuture
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

    def _prepare_rebalance(self, group: Group) -> None:
        if group.state is GroupState.COMPLETING_REBALANCE:
            for member in group.members.values():
                member.assignment = b""
                member.resolve_sync(SyncResult(ErrorCode.REBALANCE_IN_PROGRESS))
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
        self._move(group, GroupState.PREPARING_REBALANCE)
        self._maybe_complete_join(group)

    def _initial_delay_expired(self, group: Group, delay_ms: int, remaining_ms: int) -> None:
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

    def _maybe_complete_join(self, group: Group) -> None:
        if group.state is not GroupState.PREPARING_REBALANCE or not group.all_joined():
            return
        if group.initial_delay:
            return  # the first rebalance of an empty group waits out its delay
        if group.join_timer is not None:
            group.join_timer.cancel()
            group.join_timer = None
        self._complete_join(group)

    def _complete_join(self, group: Group) -> None:
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
            self._move(group, GroupState.EMPTY)
            self._persistence.save(group)
            self._groups.forget_if_unused(group)
            return
        group.protocol_name = group.select_protocol()
        if group.leader_id not in group.members:
            group.leader_id = next(iter(group.members))
        self._move(group, GroupState.COMPLETING_REBALANCE)
        for member in group.members.values():
            member.resolve_join(_join_result(group, member, members=True))
            self._restart_session(group, member)

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
        placed = await self.ensure_coordinator(group_id)
        if placed is not ErrorCode.NONE:
            return SyncResult(placed)
        group = self._groups.get(group_id)
        if group is None:
            return SyncResult(ErrorCode.UNKNOWN_MEMBER_ID)
        error = _check_member(group, member_id, group_instance_id)
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
            return _sync_result(group, member)
        # CompletingRebalance
        future: SyncFuture = asyncio.get_running_loop().create_future()
        member.sync_future = future
        self._restart_session(group, member)
        if member_id == group.leader_id:
            given = assignments or {}
            for m in group.members.values():
                m.assignment = given.get(m.member_id, b"")
            self._move(group, GroupState.STABLE)
            self._persistence.save(group)
            for m in group.members.values():
                m.resolve_sync(_sync_result(group, m))
        return await future

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
        if not self._coordinates(group_id):
            return ErrorCode.NOT_COORDINATOR
        group = self._groups.get(group_id)
        if group is None:
            return ErrorCode.UNKNOWN_MEMBER_ID
        error = _check_member(group, member_id, group_instance_id)
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
        if not self._coordinates(group_id):
            return LeaveResult(ErrorCode.NOT_COORDINATOR)
        group = self._groups.get(group_id)
        if group is None:
            return LeaveResult(
                ErrorCode.NONE, tuple((m, ErrorCode.UNKNOWN_MEMBER_ID) for m in members)
            )
        results: list[tuple[LeaveMember, ErrorCode]] = []
        for leaving in members:
            results.append((leaving, self._leave_one(group, leaving)))
        self._groups.forget_if_unused(group)
        return LeaveResult(ErrorCode.NONE, tuple(results))

    def _leave_one(self, group: Group, leaving: LeaveMember) -> ErrorCode:
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
        error = await self.ensure_coordinator(group_id)
        if error is ErrorCode.NONE:
            error = self._commit_error(group_id, member_id, generation_id, group_instance_id)
        if error is not ErrorCode.NONE:
            return dict.fromkeys(offsets, error)
        try:
            return await self._committed.commit(group_id, offsets)
        except NotCoordinatorError:
            self._drop_group(group_id)
            return dict.fromkeys(offsets, ErrorCode.NOT_COORDINATOR)

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
        error = _check_member(group, member_id, group_instance_id)
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
        return self._committed.fetch(group_id, partitions)

    async def delete_offsets(
        self, group_id: str, partitions: Iterable[TopicPartition]
    ) -> tuple[ErrorCode, dict[TopicPartition, ErrorCode]]:
        """OffsetDelete: forget committed offsets, except for topics live members consume."""
        error = await self.ensure_coordinator(group_id)
        if error is not ErrorCode.NONE:
            return error, {}
        try:
            return await self._committed.delete(group_id, partitions)
        except NotCoordinatorError:
            self._drop_group(group_id)
            return ErrorCode.NOT_COORDINATOR, {}

    async def expire_offsets(self) -> int:
        """Drop offsets of groups without members older than ``offsets_retention_ms``."""
        return await self._committed.expire()

    # ------------------------------------------------------------------ describe, list, delete

    def describe_group(self, group_id: str) -> GroupDescription:
        if not self._coordinates(group_id):
            return GroupDescription(
                group_id, GroupState.DEAD, "", "", error=ErrorCode.NOT_COORDINATOR
            )
        return self._admin.describe_group(group_id)

    def list_groups(self, states: Iterable[GroupState] | None = None) -> list[GroupListing]:
        return self._admin.list_groups(states)

    async def delete_groups(self, group_ids: Iterable[str]) -> dict[str, ErrorCode]:
        """Delete groups without members, with their committed offsets."""
        results: dict[str, ErrorCode] = {}
        ours: list[str] = []
        for group_id in group_ids:
            error = await self.ensure_coordinator(group_id)
            if error is ErrorCode.NONE:
                ours.append(group_id)
            else:
                results[group_id] = error
        for group_id in ours:
            try:
                results.update(await self._admin.delete_groups([group_id]))
            except NotCoordinatorError:
                self._drop_group(group_id)
                results[group_id] = ErrorCode.NOT_COORDINATOR
        return results

    # ------------------------------------------------------------------ lifecycle

    async def wait_persisted(self) -> None:
        """Wait until every membership snapshot written so far is stored (and, in a cluster,
        every release of a group that moved is done)."""
        await self._persistence.wait()
        if self._placement is not None:
            await self._placement.wait()

    def close(self) -> None:
        """Cancel every timer and wake every parked caller (broker shutdown)."""
        if self._placement_timer is not None:
            self._placement_timer.cancel()
            self._placement_timer = None
        for group in self._groups:
            self._shut_group(group, ErrorCode.COORDINATOR_NOT_AVAILABLE)
        self._groups.clear()

    @staticmethod
    def _shut_group(group: Group, error: ErrorCode) -> None:
        """Cancel the group's timers and answer its parked callers with ``error``."""
        if group.join_timer is not None:
            group.join_timer.cancel()
            group.join_timer = None
        for timer in group.pending_members.values():
            timer.cancel()
        for member in group.members.values():
            member.cancel_session()
            member.resolve_join(JoinResult(error, member.member_id))
            member.resolve_sync(SyncResult(error))

    # ------------------------------------------------------------------ sessions

    def _restart_session(self, group: Group, member: Member) -> None:
        member.cancel_session()
        member.session_timer = self._clock.call_later(
            member.session_timeout_ms / 1000, partial(self._session_expired, group, member)
        )

    def _session_expired(self, group: Group, member: Member) -> None:
        member.session_timer = None
        if group.members.get(member.member_id) is not member:
            return
        if (member.join_future is not None and group.state is GroupState.PREPARING_REBALANCE) or (
            member.sync_future is not None and not member.sync_future.done()
        ):
            self._restart_session(group, member)  # the rebalance timeout governs it now
            return
        self._remove_member_and_rebalance(group, member)
        self._groups.forget_if_unused(group)

    def _expire_pending(self, group: Group, member_id: str) -> None:
        if group.pending_members.pop(member_id, None) is not None:
            self._maybe_complete_join(group)
            self._groups.forget_if_unused(group)

    # ------------------------------------------------------------------ removal

    def _remove_member_and_rebalance(self, group: Group, member: Member) -> None:
        member.resolve_join(JoinResult(ErrorCode.UNKNOWN_MEMBER_ID, member.member_id))
        member.resolve_sync(SyncResult(ErrorCode.UNKNOWN_MEMBER_ID))
        self._remove_member(group, member)
        if group.state in (GroupState.STABLE, GroupState.COMPLETING_REBALANCE):
            self._prepare_rebalance(group)
        elif group.state is GroupState.PREPARING_REBALANCE:
            self._maybe_complete_join(group)

    @staticmethod
    def _remove_member(group: Group, member: Member) -> None:
        member.cancel_session()
        del group.members[member.member_id]
        if member.group_instance_id is not None:
            if group.static_members.get(member.group_instance_id) == member.member_id:
                del group.static_members[member.group_instance_id]
        if group.leader_id == member.member_id:
            group.leader_id = next(iter(group.members), None)

    # ------------------------------------------------------------------ helpers

    def _move(self, group: Group, state: GroupState) -> None:
        group.move_to(state, self._clock.now_ms())

    @staticmethod
    def _new_member_id(prefix: str) -> str:
        return f"{prefix or 'member'}-{uuid.uuid4()}"


def _check_member(group: Group, member_id: str, group_instance_id: str | None) -> ErrorCode:
    if group_instance_id is not None:
        known = group.static_members.get(group_instance_id)
        if known is not None and known != member_id:
            return ErrorCode.FENCED_INSTANCE_ID
    if member_id not in group.members:
        return ErrorCode.UNKNOWN_MEMBER_ID
    return ErrorCode.NONE


def _join_result(
    group: Group, member: Member, *, members: bool, skip_assignment: bool = False
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


def _sync_result(group: Group, member: Member) -> SyncResult:
    return SyncResult(ErrorCode.NONE, member.assignment, group.protocol_type, group.protocol_name)
