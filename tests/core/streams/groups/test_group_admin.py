"""Listing, describing and deleting groups (admin.py), through the coordinator."""

import asyncio

from group_helpers import CONSUMER, join, started, sync

from wharf.core.streams.errors import ErrorCode
from wharf.core.streams.groups.coordinator import GroupCoordinator
from wharf.core.streams.groups.types import GroupListing, GroupState, LeaveMember
from wharf.core.streams.offsets import OffsetAndMetadata, TopicPartition
from wharf.testing.clock import VirtualClock

TP = TopicPartition("events", 0)


async def test_describe_reports_metadata_and_assignments_only_when_stable(
    coordinator: GroupCoordinator, clock: VirtualClock
) -> None:
    assert coordinator.describe_group("nobody").state is GroupState.DEAD
    joined = await clock.run_until(join(coordinator))
    completing = coordinator.describe_group("g")
    assert (completing.state, completing.protocol_type, completing.protocol_name) == (
        GroupState.COMPLETING_REBALANCE,
        "consumer",
        "",
    )
    assert [(m.member_id, m.metadata, m.assignment) for m in completing.members] == [
        (joined.member_id, b"", b"")
    ]
    await sync(coordinator, joined)
    stable = coordinator.describe_group("g")
    assert stable.protocol_name == "range"
    assert [(m.metadata, m.assignment) for m in stable.members] == [
        (CONSUMER[0][1], f"to:{joined.member_id}".encode())
    ]


async def test_list_shows_live_groups_and_groups_known_by_their_offsets(
    coordinator: GroupCoordinator, clock: VirtualClock
) -> None:
    assert coordinator.list_groups() == []
    await coordinator.commit_offsets("manual", {TP: OffsetAndMetadata(1)})
    joined = await clock.run_until(join(coordinator, group="live"))
    await sync(coordinator, joined, group="live")
    assert coordinator.list_groups() == [
        GroupListing("live", "consumer", GroupState.STABLE),
        GroupListing("manual", "", GroupState.EMPTY),
    ]
    assert coordinator.list_groups([GroupState.EMPTY]) == [
        GroupListing("manual", "", GroupState.EMPTY)
    ]
    assert coordinator.list_groups([GroupState.DEAD]) == []


async def test_delete_refuses_groups_in_use_and_removes_the_rest_with_their_offsets(
    coordinator: GroupCoordinator, clock: VirtualClock
) -> None:
    await coordinator.commit_offsets("manual", {TP: OffsetAndMetadata(1)})
    handed_out = await coordinator.join_group(
        "pending", "", protocol_type="consumer", protocols=CONSUMER, session_timeout_ms=500
    )
    assert handed_out.error is ErrorCode.MEMBER_ID_REQUIRED
    assert await coordinator.delete_groups(["", "pending", "manual", "ghost"]) == {
        "": ErrorCode.INVALID_GROUP_ID,
        "pending": ErrorCode.NON_EMPTY_GROUP,  # a member id is handed out, not yet used
        "manual": ErrorCode.NONE,
        "ghost": ErrorCode.GROUP_ID_NOT_FOUND,
    }
    assert coordinator.fetch_offsets("manual") == {}
    assert coordinator.describe_group("manual").state is GroupState.DEAD
    clock.advance(500)  # the handed-out id expires unused: the group is gone with it
    assert await coordinator.delete_groups(["pending"]) == {"pending": ErrorCode.GROUP_ID_NOT_FOUND}


async def test_a_group_whose_members_all_left_during_its_first_delay_can_be_deleted(
    coordinator: GroupCoordinator, clock: VirtualClock
) -> None:
    # the first join phase waits out its initial delay even with nobody left in it
    await coordinator.commit_offsets("g", {TP: OffsetAndMetadata(4)})
    joining = await started(asyncio.create_task(join(coordinator)))
    [member_id] = [m.member_id for m in coordinator.describe_group("g").members]
    coordinator.leave_group("g", [LeaveMember(member_id)])
    assert (await joining).error is ErrorCode.UNKNOWN_MEMBER_ID
    assert coordinator.describe_group("g").state is GroupState.PREPARING_REBALANCE
    assert await coordinator.delete_groups(["g"]) == {"g": ErrorCode.NONE}
    assert coordinator.describe_group("g").state is GroupState.DEAD
    clock.advance(1_000)  # the delay's timer fires on a deleted group: nothing happens
    assert coordinator.list_groups() == []
