"""Membership snapshots (persistence.py): a Stable group carries on across a restart."""

import asyncio
import logging
from pathlib import Path

import pytest
from group_helpers import join, sync

from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.streams.errors import ErrorCode
from wharf.core.streams.groups.coordinator import GroupCoordinator
from wharf.core.streams.groups.group import Group, Member
from wharf.core.streams.groups.persistence import GroupPersistence
from wharf.core.streams.groups.state import GroupState
from wharf.core.streams.groups.types import LeaveMember
from wharf.core.streams.offsets import OffsetStore
from wharf.errors import StorageError
from wharf.testing.clock import VirtualClock


def stable_group(group_id: str = "g") -> Group:
    group = Group(
        group_id,
        state=GroupState.STABLE,
        generation_id=3,
        protocol_type="consumer",
        protocol_name="range",
        leader_id="b",
    )
    for member_id, instance in (("a", None), ("b", "host-b")):
        group.members[member_id] = Member(
            member_id,
            instance,
            f"client-{member_id}",
            "/10.0.0.1",
            400,
            900,
            "consumer",
            [("range", member_id.encode()), ("sticky", b"s")],
            assignment=b"for:" + member_id.encode(),
        )
    group.static_members["host-b"] = "b"
    return group


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


async def test_a_saved_group_is_restored_as_it_was(tmp_path: Path) -> None:
    store = OffsetStore.open(tmp_path, fsync=FsyncPolicy.ALWAYS)
    saved = stable_group()
    persistence = GroupPersistence(store)
    persistence.save(saved)
    await persistence.wait()
    await store.close()

    store = OffsetStore.open(tmp_path, fsync=FsyncPolicy.ALWAYS)
    try:
        [restored] = GroupPersistence(store).restore(now_ms=77)
        assert (restored.group_id, restored.state, restored.state_since_ms) == (
            "g",
            GroupState.STABLE,
            77,
        )
        assert (restored.generation_id, restored.protocol_type, restored.protocol_name) == (
            3,
            "consumer",
            "range",
        )
        assert restored.leader_id == "b"
        assert restored.static_members == {"host-b": "b"}
        for member_id, member in restored.members.items():
            original = saved.members[member_id]
            assert (
                member.group_instance_id,
                member.client_id,
                member.client_host,
                member.session_timeout_ms,
                member.rebalance_timeout_ms,
                member.protocol_type,
                member.protocols,
                member.assignment,
            ) == (
                original.group_instance_id,
                original.client_id,
                original.client_host,
                original.session_timeout_ms,
                original.rebalance_timeout_ms,
                original.protocol_type,
                original.protocols,
                original.assignment,
            )
        assert list(restored.members) == ["a", "b"]
    finally:
        await store.close()


async def test_a_group_that_is_no_longer_stable_leaves_a_tombstone(tmp_path: Path) -> None:
    store = OffsetStore.open(tmp_path, fsync=FsyncPolicy.ALWAYS)
    try:
        persistence = GroupPersistence(store)
        group = stable_group()
        persistence.save(group)
        group.move_to(GroupState.PREPARING_REBALANCE, 0)
        persistence.save(group)
        await persistence.wait()
        assert store.group_metadata() == {}
        assert persistence.restore(now_ms=0) == []
    finally:
        await store.close()


async def test_a_leader_missing_from_its_snapshot_is_replaced_by_the_first_member(
    tmp_path: Path,
) -> None:
    store = OffsetStore.open(tmp_path, fsync=FsyncPolicy.ALWAYS)
    try:
        persistence = GroupPersistence(store)
        group = stable_group()
        group.leader_id = "gone"
        persistence.save(group)
        await persistence.wait()
        [restored] = persistence.restore(now_ms=0)
        assert restored.leader_id == "a"
    finally:
        await store.close()


async def test_unreadable_snapshots_are_ignored_with_a_warning(
    tmp_path: Path, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    store = OffsetStore.open(tmp_path, fsync=FsyncPolicy.ALWAYS)
    await store.store_group_metadata("garbled", b"not a snapshot")
    coord = GroupCoordinator(BrokerConfig(), clock, store)
    try:
        with caplog.at_level(logging.WARNING):
            coord.start()
        assert "ignoring unreadable membership snapshot of group 'garbled'" in caplog.text
        assert coord.describe_group("garbled").state is GroupState.DEAD
    finally:
        coord.close()
        await store.close()


async def test_a_failed_write_is_logged_and_does_not_fail_the_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = OffsetStore.open(tmp_path, fsync=FsyncPolicy.ALWAYS)

    async def failing(group_id: str, snapshot: bytes | None) -> None:
        raise StorageError("disk on fire")

    monkeypatch.setattr(store, "store_group_metadata", failing)
    try:
        persistence = GroupPersistence(store)
        with caplog.at_level(logging.ERROR):
            persistence.save(stable_group())
            await persistence.wait()
        assert "membership of group 'g' not saved" in caplog.text
    finally:
        await store.close()
