"""Group membership driven by several simulated members running concurrently."""

import asyncio
import struct
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TypeVar

import pytest

from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.streams.errors import ErrorCode
from wharf.core.streams.groups.coordinator import GroupCoordinator
from wharf.core.streams.groups.types import GroupState, JoinResult, LeaveMember
from wharf.core.streams.offsets import OffsetAndMetadata, OffsetStore, TopicPartition
from wharf.testing.clock import VirtualClock

SESSION_MS = 1000
T = TypeVar("T")


def subscription(*topics: str) -> bytes:
    out = struct.pack(">hi", 0, len(topics))
    for topic in topics:
        out += struct.pack(">h", len(topic)) + topic.encode()
    return out + struct.pack(">i", -1)


CONSUMER = [("range", subscription("events"))]


@pytest.fixture
async def coordinator(tmp_path: Path, clock: VirtualClock) -> AsyncIterator[GroupCoordinator]:
    config = BrokerConfig(group_initial_rebalance_delay_ms=100, group_min_session_timeout_ms=100)
    store = OffsetStore.open(tmp_path, fsync=FsyncPolicy.ALWAYS)
    store.start()
    coord = GroupCoordinator(config, clock, store)
    try:
        yield coord
    finally:
        coord.close()
        await coord.wait_persisted()
        await store.close()


async def join(
    coord: GroupCoordinator,
    group: str = "g",
    member_id: str = "",
    *,
    protocols: Sequence[tuple[str, bytes]] = CONSUMER,
    instance: str | None = None,
    session_ms: int = SESSION_MS,
    rebalance_ms: int | None = None,
) -> JoinResult:
    """A client's join: the member-id round trip for new dynamic members, then the real join."""
    result = await coord.join_group(
        group,
        member_id,
        protocol_type="consumer",
        protocols=protocols,
        session_timeout_ms=session_ms,
        rebalance_timeout_ms=rebalance_ms,
        group_instance_id=instance,
        client_id="client",
        client_host="/127.0.0.1",
    )
    if result.error is ErrorCode.MEMBER_ID_REQUIRED:
        assert member_id == "" and result.member_id
        return await join(
            coord,
            group,
            result.member_id,
            protocols=protocols,
            instance=instance,
            session_ms=session_ms,
            rebalance_ms=rebalance_ms,
        )
    return result


async def sync(coord: GroupCoordinator, result: JoinResult, group: str = "g") -> bytes:
    """Leader assigns ``b"<member id>"`` to each member; returns this member's assignment."""
    assignments = None
    if result.member_id == result.leader_id:
        assignments = {m.member_id: f"to:{m.member_id}".encode() for m in result.members}
    synced = await coord.sync_group(
        group, result.member_id, result.generation_id, assignments=assignments
    )
    assert synced.error is ErrorCode.NONE, synced
    return synced.assignment


async def started(task: asyncio.Task[T]) -> asyncio.Task[T]:
    """Let a newly created task run up to its first wait (a join parks in one step)."""
    await asyncio.sleep(0)
    assert not task.done()
    return task


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


async def test_offset_commit_rules_and_durability(tmp_path: Path, clock: VirtualClock) -> None:
    config = BrokerConfig(group_initial_rebalance_delay_ms=0, group_min_session_timeout_ms=100)
    store = OffsetStore.open(tmp_path, fsync=FsyncPolicy.ALWAYS)
    coord = GroupCoordinator(config, clock, store)
    tp = TopicPartition("events", 0)
    try:
        member = await clock.run_until(join(coord))
        bad = await coord.commit_offsets(
            "g", {tp: OffsetAndMetadata(3)}, member_id=member.member_id, generation_id=7
        )
        assert bad == {tp: ErrorCode.REBALANCE_IN_PROGRESS}  # still CompletingRebalance
        await sync(coord, member)
        bad = await coord.commit_offsets(
            "g", {tp: OffsetAndMetadata(3)}, member_id=member.member_id, generation_id=7
        )
        assert bad == {tp: ErrorCode.ILLEGAL_GENERATION}
        ok = await coord.commit_offsets(
            "g",
            {
                tp: OffsetAndMetadata(3, "m"),
                TopicPartition("events", 1): OffsetAndMetadata(0, "x" * 5000),
            },
            member_id=member.member_id,
            generation_id=member.generation_id,
        )
        assert ok == {
            tp: ErrorCode.NONE,
            TopicPartition("events", 1): ErrorCode.OFFSET_METADATA_TOO_LARGE,
        }
        simple = await coord.commit_offsets("manual", {tp: OffsetAndMetadata(11)})
        assert simple == {tp: ErrorCode.NONE}
        refused = await coord.commit_offsets("nogroup", {tp: OffsetAndMetadata(1)}, generation_id=3)
        assert refused == {tp: ErrorCode.ILLEGAL_GENERATION}
        deleted = await coord.delete_offsets("g", [tp])
        assert deleted == (ErrorCode.NONE, {tp: ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC})
        assert await coord.delete_groups(["g", "manual", "ghost"]) == {
            "g": ErrorCode.NON_EMPTY_GROUP,
            "manual": ErrorCode.NONE,
            "ghost": ErrorCode.GROUP_ID_NOT_FOUND,
        }
    finally:
        coord.close()
        await coord.wait_persisted()
        await store.close()
    # a new coordinator over the reopened store still knows the committed offsets
    store = OffsetStore.open(tmp_path, fsync=FsyncPolicy.ALWAYS)
    coord = GroupCoordinator(config, clock, store)
    try:
        fetched = coord.fetch_offsets("g", [tp, TopicPartition("events", 1)])
        assert fetched == {tp: OffsetAndMetadata(3, "m", -1, clock.now_ms())}
        assert coord.fetch_offsets("manual") == {}
        assert coord.describe_group("g").state is GroupState.EMPTY
        assert [(g.group_id, g.state) for g in coord.list_groups()] == [("g", GroupState.EMPTY)]
        clock.advance(config.offsets_retention_ms)
        assert await coord.expire_offsets() == 1
        assert coord.list_groups() == []
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


async def test_stable_group_survives_a_restart_without_rebalance(
    tmp_path: Path, clock: VirtualClock
) -> None:
    config = BrokerConfig(group_initial_rebalance_delay_ms=0, group_min_session_timeout_ms=100)
    store = OffsetStore.open(tmp_path, fsync=FsyncPolicy.ALWAYS)
    coord = GroupCoordinator(config, clock, store)
    coord.start()
    a, b = await clock.run_until(
        asyncio.gather(
            join(coord, instance="static-a", session_ms=5000), join(coord, session_ms=400)
        )
    )
    await asyncio.gather(sync(coord, a), sync(coord, b))
    empty = await clock.run_until(join(coord, group="gone"))
    await sync(coord, empty, group="gone")
    coord.leave_group("gone", [LeaveMember(empty.member_id)])
    coord.close()
    await coord.wait_persisted()
    await store.close()

    store = OffsetStore.open(tmp_path, fsync=FsyncPolicy.ALWAYS)
    coord = GroupCoordinator(config, clock, store)
    coord.start()
    restarted_at = clock.now_ms()
    try:
        description = coord.describe_group("g")
        assert description.state is GroupState.STABLE
        assert {m.member_id: m.assignment for m in description.members} == {
            a.member_id: f"to:{a.member_id}".encode(),
            b.member_id: f"to:{b.member_id}".encode(),
        }
        assert coord.describe_group("gone").state is GroupState.DEAD
        assert coord.heartbeat("g", a.member_id, a.generation_id) is ErrorCode.NONE
        synced = await coord.sync_group("g", a.member_id, a.generation_id)
        assert synced.assignment == f"to:{a.member_id}".encode()
        assert (
            coord.heartbeat("g", "other", a.generation_id, group_instance_id="static-a")
            is ErrorCode.FENCED_INSTANCE_ID
        )
        # b died while the broker was down: its session runs out and a rebalance starts

        async def heartbeat_until_told_to_rejoin() -> ErrorCode:
            while (code := coord.heartbeat("g", a.member_id, a.generation_id)) is ErrorCode.NONE:
                await clock.sleep(0.05)
            return code

        code = await clock.run_until(heartbeat_until_told_to_rejoin(), limit_s=10)
        assert code is ErrorCode.REBALANCE_IN_PROGRESS
        assert clock.now_ms() - restarted_at in range(400, 450)  # b's session from the restart
        alone = await join(coord, member_id=a.member_id, instance="static-a", session_ms=5000)
        assert alone.generation_id == a.generation_id + 1
        assert [m.member_id for m in alone.members] == [a.member_id]
    finally:
        coord.close()
        await coord.wait_persisted()
        await store.close()
