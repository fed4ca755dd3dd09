"""Group membership driven by several simulated members running concurrently."""

import asyncio
from pathlib import Path

import pytest
from group_helpers import CONSUMER, SESSION_MS, join, started, sync

from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.streams.errors import ErrorCode
from wharf.core.streams.groups.coordinator import GroupCoordinator
from wharf.core.streams.groups.types import GroupState, LeaveMember
from wharf.core.streams.offsets import OffsetStore
from wharf.testing.clock import VirtualClock


async def test_first_member_lifecycle(coordinator: GroupCoordinator, clock: VirtualClock) -> None:
    first = await coordinator.join_group(
        "g", "", protocol_type="consumer", protocols=CONSUMER, session_timeout_ms=SESSION_MS
    )
    assert first.error is ErrorCode.MEMBER_ID_REQUIRED
    assert first.member_id
    joined_at = clock.now_ms()
    result = await clock.run_until(join(coordinator, member_id=first.member_id))
    assert clock.now_ms() == joined_at + 100  # the initial rebalance delay
    assert result.error is ErrorCode.NONE
    assert result.member_id == first.member_id == result.leader_id
    assert result.generation_id == 1
    assert result.protocol_name == "range"
    assert [m.metadata for m in result.members] == [CONSUMER[0][1]]
    assert coordinator.describe_group("g").state is GroupState.COMPLETING_REBALANCE
    assert await sync(coordinator, result) == f"to:{result.member_id}".encode()
    description = coordinator.describe_group("g")
    assert description.state is GroupState.STABLE
    assert description.protocol_type == "consumer"
    assert description.protocol_name == "range"
    (member,) = description.members
    assert (member.member_id, member.client_id, member.client_host) == (
        result.member_id,
        "client",
        "/127.0.0.1",
    )
    assert member.metadata == CONSUMER[0][1]
    assert member.assignment == f"to:{result.member_id}".encode()
    assert coordinator.heartbeat("g", result.member_id, 1) is ErrorCode.NONE


async def test_members_joining_together_share_one_generation(
    coordinator: GroupCoordinator, clock: VirtualClock
) -> None:
    results = await clock.run_until(asyncio.gather(*(join(coordinator) for _ in range(3))))
    assert {r.generation_id for r in results} == {1}
    leaders = [r for r in results if r.member_id == r.leader_id]
    assert len(leaders) == 1
    assert {m.member_id for m in leaders[0].members} == {r.member_id for r in results}
    assert all(not r.members for r in results if r is not leaders[0])
    # followers sync first and wait for the leader's assignment
    followers = [asyncio.create_task(sync(coordinator, r)) for r in results if r is not leaders[0]]
    await clock.run_for(50)
    assert not any(f.done() for f in followers)
    await sync(coordinator, leaders[0])
    got = await asyncio.gather(*followers)
    assert sorted(got) == sorted(
        f"to:{r.member_id}".encode() for r in results if r is not leaders[0]
    )


async def test_new_member_triggers_rebalance_of_stable_group(
    coordinator: GroupCoordinator, clock: VirtualClock
) -> None:
    a = await clock.run_until(join(coordinator))
    await sync(coordinator, a)
    b_task = await started(asyncio.create_task(join(coordinator)))
    assert coordinator.describe_group("g").state is GroupState.PREPARING_REBALANCE
    assert coordinator.heartbeat("g", a.member_id, 1) is ErrorCode.REBALANCE_IN_PROGRESS
    a2 = await join(coordinator, member_id=a.member_id)
    b = await b_task
    assert a2.generation_id == b.generation_id == 2
    assert a2.leader_id == b.leader_id == a.member_id
    assert {m.member_id for m in a2.members} == {a.member_id, b.member_id}
    assert coordinator.heartbeat("g", a.member_id, 1) is ErrorCode.ILLEGAL_GENERATION
    assignments = await asyncio.gather(sync(coordinator, a2), sync(coordinator, b))
    assert assignments == [f"to:{a.member_id}".encode(), f"to:{b.member_id}".encode()]
    assert coordinator.heartbeat("g", "nobody", 2) is ErrorCode.UNKNOWN_MEMBER_ID


async def test_member_that_does_not_rejoin_is_dropped_at_rebalance_timeout(
    coordinator: GroupCoordinator, clock: VirtualClock
) -> None:
    a = await clock.run_until(join(coordinator, rebalance_ms=300))
    await sync(coordinator, a)
    asked_at = clock.now_ms()
    b = await clock.run_until(join(coordinator, rebalance_ms=300))  # a never rejoins
    assert clock.now_ms() == asked_at + 300  # the rebalance timeout, not a's 1 s session
    assert b.generation_id == 2
    assert b.leader_id == b.member_id
    assert [m.member_id for m in b.members] == [b.member_id]
    assert coordinator.heartbeat("g", a.member_id, 1) is ErrorCode.UNKNOWN_MEMBER_ID


async def test_protocol_is_chosen_by_vote_among_common_protocols(
    coordinator: GroupCoordinator, clock: VirtualClock
) -> None:
    prefs = [
        [("range", b"r1"), ("roundrobin", b"rr1"), ("sticky", b"s1")],
        [("roundrobin", b"rr2"), ("range", b"r2")],
        [("roundrobin", b"rr3"), ("range", b"r3")],
    ]
    joins = asyncio.gather(*(join(coordinator, protocols=p) for p in prefs))
    results = await clock.run_until(joins)
    assert {r.protocol_name for r in results} == {"roundrobin"}
    (leader,) = [r for r in results if r.leader_id == r.member_id]
    assert sorted(m.metadata for m in leader.members) == [b"rr1", b"rr2", b"rr3"]
    mismatch = await coordinator.join_group(
        "g", "", protocol_type="consumer", protocols=[("sticky", b"")], session_timeout_ms=500
    )
    assert mismatch.error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    wrong_type = await coordinator.join_group(
        "g", "", protocol_type="connect", protocols=[("range", b"")], session_timeout_ms=500
    )
    assert wrong_type.error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL


async def test_join_validates_session_timeout_and_group_id(
    coordinator: GroupCoordinator,
) -> None:
    too_short = await coordinator.join_group(
        "g", "", protocol_type="consumer", protocols=CONSUMER, session_timeout_ms=10
    )
    assert too_short.error is ErrorCode.INVALID_SESSION_TIMEOUT
    no_group = await coordinator.join_group(
        "", "", protocol_type="consumer", protocols=CONSUMER, session_timeout_ms=500
    )
    assert no_group.error is ErrorCode.INVALID_GROUP_ID
    unknown = await coordinator.join_group(
        "g", "made-up", protocol_type="consumer", protocols=CONSUMER, session_timeout_ms=500
    )
    assert unknown.error is ErrorCode.UNKNOWN_MEMBER_ID


async def test_leader_leaving_hands_leadership_on(
    coordinator: GroupCoordinator, clock: VirtualClock
) -> None:
    a, b = await clock.run_until(asyncio.gather(join(coordinator), join(coordinator)))
    leader, follower = (a, b) if a.member_id == a.leader_id else (b, a)
    await asyncio.gather(sync(coordinator, leader), sync(coordinator, follower))
    left = coordinator.leave_group("g", [LeaveMember(leader.member_id), LeaveMember("ghost")])
    assert left.error is ErrorCode.NONE
    assert [code for _, code in left.members] == [ErrorCode.NONE, ErrorCode.UNKNOWN_MEMBER_ID]
    assert coordinator.heartbeat("g", follower.member_id, 1) is ErrorCode.REBALANCE_IN_PROGRESS
    again = await join(coordinator, member_id=follower.member_id)
    assert again.generation_id == 2
    assert again.leader_id == follower.member_id
    await sync(coordinator, again)
    coordinator.leave_group("g", [LeaveMember(follower.member_id)])
    assert coordinator.describe_group("g").state is GroupState.DEAD  # forgotten: no offsets


async def test_silent_member_is_evicted_after_its_session_timeout(
    coordinator: GroupCoordinator, clock: VirtualClock
) -> None:
    quiet = await clock.run_until(join(coordinator, session_ms=300))
    await sync(coordinator, quiet)
    chatty_task = await started(asyncio.create_task(join(coordinator, session_ms=5000)))
    assert coordinator.describe_group("g").state is GroupState.PREPARING_REBALANCE
    # the quiet member rejoins once, then stops heartbeating
    rejoined = await join(coordinator, member_id=quiet.member_id, session_ms=300)
    chatty = await chatty_task
    await asyncio.gather(sync(coordinator, rejoined), sync(coordinator, chatty))
    synced_at = clock.now_ms()

    async def heartbeats() -> ErrorCode:
        while True:
            code = coordinator.heartbeat("g", chatty.member_id, chatty.generation_id)
            if code is not ErrorCode.NONE:
                return code
            await clock.sleep(0.05)

    assert await clock.run_until(heartbeats(), limit_s=10) is ErrorCode.REBALANCE_IN_PROGRESS
    assert clock.now_ms() - synced_at in range(300, 350)  # told at the first beat after 300 ms
    alone = await join(coordinator, member_id=chatty.member_id, session_ms=5000)
    assert [m.member_id for m in alone.members] == [chatty.member_id]
    assert coordinator.heartbeat("g", quiet.member_id, alone.generation_id) is (
        ErrorCode.UNKNOWN_MEMBER_ID
    )


async def test_static_member_restart_takes_over_without_rebalance(
    coordinator: GroupCoordinator, clock: VirtualClock
) -> None:
    a, b = await clock.run_until(
        asyncio.gather(join(coordinator, instance="host-a"), join(coordinator, instance="host-b"))
    )
    await asyncio.gather(sync(coordinator, a), sync(coordinator, b))
    follower = b if a.member_id == a.leader_id else a
    instance = "host-b" if follower is b else "host-a"
    # the follower process restarts: same instance id, no member id
    restarted = await join(coordinator, instance=instance)
    assert restarted.error is ErrorCode.NONE
    assert restarted.member_id != follower.member_id
    assert restarted.generation_id == follower.generation_id  # no rebalance
    assert coordinator.describe_group("g").state is GroupState.STABLE
    synced = await coordinator.sync_group(
        "g", restarted.member_id, restarted.generation_id, group_instance_id=instance
    )
    assert synced.assignment == f"to:{follower.member_id}".encode()
    # the old incarnation is fenced
    assert (
        coordinator.heartbeat("g", follower.member_id, 1, group_instance_id=instance)
        is ErrorCode.FENCED_INSTANCE_ID
    )
    assert coordinator.heartbeat("g", follower.member_id, 1) is ErrorCode.UNKNOWN_MEMBER_ID
    # the next rebalance waits for the new incarnation like for any other member
    leader = a if follower is b else b
    newcomer = await started(asyncio.create_task(join(coordinator)))
    assert coordinator.describe_group("g").state is GroupState.PREPARING_REBALANCE
    leader_again = asyncio.create_task(join(coordinator, member_id=leader.member_id))
    await clock.run_for(50)
    assert coordinator.describe_group("g").state is GroupState.PREPARING_REBALANCE
    assert not newcomer.done() and not leader_again.done()
    follower_again = await join(coordinator, member_id=restarted.member_id, instance=instance)
    assert follower_again.generation_id == 2
    assert (await leader_again).generation_id == (await newcomer).generation_id == 2
    left = coordinator.leave_group("g", [LeaveMember("", instance)])
    assert left.members[0][1] is ErrorCode.NONE
    assert coordinator.describe_group("g").state is GroupState.PREPARING_REBALANCE


async def test_new_group_waits_initial_delay_and_gathers_late_joiners(
    tmp_path: Path, clock: VirtualClock
) -> None:
    config = BrokerConfig(group_initial_rebalance_delay_ms=400, group_min_session_timeout_ms=100)
    store = OffsetStore.open(tmp_path, fsync=FsyncPolicy.ALWAYS)
    coord = GroupCoordinator(config, clock, store)
    try:
        started_at = clock.now_ms()
        first = await started(asyncio.create_task(join(coord, rebalance_ms=10_000)))
        assert coord.describe_group("g").state is GroupState.PREPARING_REBALANCE
        await clock.run_for(200)
        second = asyncio.create_task(join(coord, rebalance_ms=10_000))
        a, b = await clock.run_until(asyncio.gather(first, second))
        # the late joiner extended the 400 ms delay by another 400 ms
        assert clock.now_ms() == started_at + 800
        assert a.generation_id == b.generation_id == 1
        assert len([r for r in (a, b) if r.members]) == 1
    finally:
        coord.close()
        await coord.wait_persisted()
        await store.close()


async def test_sync_errors_and_a_lost_join_response(
    coordinator: GroupCoordinator, clock: VirtualClock
) -> None:
    a, b = await clock.run_until(asyncio.gather(join(coordinator), join(coordinator)))
    leader, follower = (a, b) if a.member_id == a.leader_id else (b, a)
    wrong = await coordinator.sync_group("g", follower.member_id, follower.generation_id + 1)
    assert wrong.error is ErrorCode.ILLEGAL_GENERATION
    stranger = await coordinator.sync_group("g", "stranger", follower.generation_id)
    assert stranger.error is ErrorCode.UNKNOWN_MEMBER_ID
    inconsistent = await coordinator.sync_group(
        "g", follower.member_id, follower.generation_id, protocol_name="roundrobin"
    )
    assert inconsistent.error is ErrorCode.INCONSISTENT_GROUP_PROTOCOL
    # the follower never saw its join response and sends the same join again: same generation
    again = await join(coordinator, member_id=follower.member_id)
    assert again.generation_id == follower.generation_id
    assert coordinator.describe_group("g").state is GroupState.COMPLETING_REBALANCE
    await asyncio.gather(sync(coordinator, leader), sync(coordinator, again))
    # a stable follower rejoining with unchanged metadata gets the current generation back
    unchanged = await join(coordinator, member_id=follower.member_id)
    assert unchanged.generation_id == follower.generation_id
    assert coordinator.describe_group("g").state is GroupState.STABLE
    # changed metadata starts a rebalance; syncing the old generation is then refused
    changing = await started(
        asyncio.create_task(
            join(coordinator, member_id=follower.member_id, protocols=[("range", b"new")])
        )
    )
    assert coordinator.describe_group("g").state is GroupState.PREPARING_REBALANCE
    late = await coordinator.sync_group("g", leader.member_id, leader.generation_id)
    assert late.error is ErrorCode.REBALANCE_IN_PROGRESS
    rejoined = await join(coordinator, member_id=leader.member_id)
    changed = await changing
    assert rejoined.generation_id == changed.generation_id == leader.generation_id + 1
    assert {m.metadata for m in rejoined.members} == {CONSUMER[0][1], b"new"}


async def test_old_clients_join_without_the_member_id_round_trip(
    coordinator: GroupCoordinator, clock: VirtualClock
) -> None:
    result = await clock.run_until(
        coordinator.join_group(
            "g",
            "",
            protocol_type="consumer",
            protocols=CONSUMER,
            session_timeout_ms=SESSION_MS,
            require_known_member_id=False,
        )
    )
    assert result.error is ErrorCode.NONE
    assert result.member_id == result.leader_id
    assert result.generation_id == 1


async def test_member_id_never_used_stops_blocking_after_its_session(
    coordinator: GroupCoordinator, clock: VirtualClock
) -> None:
    a = await clock.run_until(join(coordinator))
    await sync(coordinator, a)
    abandoned = await coordinator.join_group(
        "g", "", protocol_type="consumer", protocols=CONSUMER, session_timeout_ms=200
    )
    assert abandoned.error is ErrorCode.MEMBER_ID_REQUIRED
    handed_out_at = clock.now_ms()
    # a rebalance now waits for the pending member, until its session timeout expires
    rejoined = await clock.run_until(
        coordinator.join_group(
            "g",
            a.member_id,
            protocol_type="consumer",
            protocols=[("range", b"changed")],
            session_timeout_ms=SESSION_MS,
            rebalance_timeout_ms=10_000,
        )
    )
    assert clock.now_ms() == handed_out_at + 200
    assert rejoined.error is ErrorCode.NONE
    assert [m.member_id for m in rejoined.members] == [a.member_id]
    late = await coordinator.join_group(
        "g",
        abandoned.member_id,
        protocol_type="consumer",
        protocols=CONSUMER,
        session_timeout_ms=SESSION_MS,
    )
    assert late.error is ErrorCode.UNKNOWN_MEMBER_ID


@pytest.mark.parametrize("supports_skip", [True, False])
async def test_static_leader_restart_in_stable_group(
    coordinator: GroupCoordinator, clock: VirtualClock, supports_skip: bool
) -> None:
    a, b = await clock.run_until(
        asyncio.gather(join(coordinator, instance="host-a"), join(coordinator, instance="host-b"))
    )
    await asyncio.gather(sync(coordinator, a), sync(coordinator, b))
    leader_instance = "host-a" if a.member_id == a.leader_id else "host-b"
    old_leader = a if leader_instance == "host-a" else b
    restarted = await coordinator.join_group(
        "g",
        "",
        protocol_type="consumer",
        protocols=CONSUMER,
        session_timeout_ms=SESSION_MS,
        group_instance_id=leader_instance,
        supports_skip_assignment=supports_skip,
    )
    assert restarted.error is ErrorCode.NONE
    assert restarted.leader_id == restarted.member_id != old_leader.member_id
    assert restarted.generation_id == old_leader.generation_id
    assert restarted.skip_assignment is supports_skip
    assert len(restarted.members) == (2 if supports_skip else 0)
    synced = await coordinator.sync_group("g", restarted.member_id, restarted.generation_id)
    assert synced.assignment == f"to:{old_leader.member_id}".encode()
    assert coordinator.describe_group("g").state is GroupState.STABLE
