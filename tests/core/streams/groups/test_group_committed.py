"""Committed offsets (committed.py) through the coordinator: the rules a commit must pass,
durability across a restart, OffsetDelete and expiry."""

from pathlib import Path

from group_helpers import join, sync

from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.streams.errors import ErrorCode
from wharf.core.streams.groups.coordinator import GroupCoordinator
from wharf.core.streams.groups.types import GroupState
from wharf.core.streams.offsets import OffsetAndMetadata, OffsetStore, TopicPartition
from wharf.testing.clock import VirtualClock

TP = TopicPartition("events", 0)


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


async def test_commits_to_unknown_partitions_are_refused_one_by_one(
    tmp_path: Path, clock: VirtualClock
) -> None:
    store = OffsetStore.open(tmp_path, fsync=FsyncPolicy.ALWAYS)
    coord = GroupCoordinator(
        BrokerConfig(), clock, store, partition_exists=lambda topic, p: (topic, p) == TP
    )
    try:
        gone = TopicPartition("events", 9)
        codes = await coord.commit_offsets(
            "g", {TP: OffsetAndMetadata(1), gone: OffsetAndMetadata(2)}
        )
        assert codes == {TP: ErrorCode.NONE, gone: ErrorCode.UNKNOWN_TOPIC_OR_PARTITION}
        assert coord.fetch_offsets("g") == {TP: OffsetAndMetadata(1, "", -1, clock.now_ms())}
    finally:
        coord.close()
        await store.close()


async def test_a_commit_keeps_the_member_s_session_alive(
    coordinator: GroupCoordinator, clock: VirtualClock
) -> None:
    member = await clock.run_until(join(coordinator, session_ms=300))
    await sync(coordinator, member)
    for _ in range(5):  # 1 s in all, never 300 ms without a commit
        clock.advance(200)
        codes = await coordinator.commit_offsets(
            "g", {TP: OffsetAndMetadata(1)}, member_id=member.member_id, generation_id=1
        )
        assert codes == {TP: ErrorCode.NONE}
    assert coordinator.heartbeat("g", member.member_id, 1) is ErrorCode.NONE
    clock.advance(300)
    assert coordinator.heartbeat("g", member.member_id, 1) is ErrorCode.UNKNOWN_MEMBER_ID


async def test_offset_delete_rules(coordinator: GroupCoordinator, clock: VirtualClock) -> None:
    assert await coordinator.delete_offsets("ghost", [TP]) == (ErrorCode.GROUP_ID_NOT_FOUND, {})
    other = TopicPartition("elsewhere", 0)
    await coordinator.commit_offsets("g", {TP: OffsetAndMetadata(1), other: OffsetAndMetadata(2)})
    member = await clock.run_until(join(coordinator))  # subscribes to "events"
    await sync(coordinator, member)
    assert await coordinator.delete_offsets("g", [TP, other]) == (
        ErrorCode.NONE,
        {TP: ErrorCode.GROUP_SUBSCRIBED_TO_TOPIC, other: ErrorCode.NONE},
    )
    assert set(coordinator.fetch_offsets("g")) == {TP}
    connect = await clock.run_until(
        coordinator.join_group(
            "c",
            "",
            protocol_type="connect",
            protocols=[("v0", b"")],
            session_timeout_ms=1000,
            require_known_member_id=False,
        )
    )
    assert connect.error is ErrorCode.NONE
    # members of a group that is not a consumer group: their subscriptions cannot be read
    assert await coordinator.delete_offsets("c", [TP]) == (ErrorCode.NON_EMPTY_GROUP, {})


async def test_offsets_of_a_group_with_members_do_not_expire(
    tmp_path: Path, clock: VirtualClock
) -> None:
    config = BrokerConfig(group_initial_rebalance_delay_ms=0, offsets_retention_ms=60_000)
    store = OffsetStore.open(tmp_path, fsync=FsyncPolicy.ALWAYS)
    coord = GroupCoordinator(config, clock, store)
    try:
        member = await clock.run_until(join(coord, session_ms=100_000))
        await sync(coord, member)
        await coord.commit_offsets(
            "g", {TP: OffsetAndMetadata(1)}, member_id=member.member_id, generation_id=1
        )
        await coord.commit_offsets("idle", {TP: OffsetAndMetadata(1)})
        clock.advance(60_000)
        assert await coord.expire_offsets() == 1
        assert [g.group_id for g in coord.list_groups()] == ["g"]
        assert coord.describe_group("g").state is GroupState.STABLE
    finally:
        coord.close()
        await coord.wait_persisted()
        await store.close()
