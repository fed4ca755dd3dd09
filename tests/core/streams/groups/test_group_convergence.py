"""Many simulated consumers that join, crash and leave at random converge on one stable group.

Each simulated member follows the consumer client's loop (join with the member-id round trip,
sync, heartbeat; rejoin on REBALANCE_IN_PROGRESS or ILLEGAL_GENERATION; start over on
UNKNOWN_MEMBER_ID). A seeded driver crashes some (they stop without leaving, so only their
session timeout removes them), stops others cleanly and starts new ones. Afterwards every
survivor must end in the same Stable generation holding the assignment its leader gave it.
Everything runs on a virtual clock: heartbeats, crashes and session expiries take no real time.
"""

import asyncio
import random
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.streams.errors import ErrorCode
from wharf.core.streams.groups.coordinator import GroupCoordinator
from wharf.core.streams.groups.types import GroupState, LeaveMember
from wharf.core.streams.offsets import OffsetStore
from wharf.testing.clock import VirtualClock

SESSION_MS = 400
HEARTBEAT_S = 0.05


@dataclass
class SimulatedConsumer:
    coord: GroupCoordinator
    clock: VirtualClock
    name: str
    member_id: str = ""
    generation: int = -1
    assignment: bytes = b""
    stable: bool = False
    leaving: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        while not self.leaving.is_set():
            self.stable = False
            joined = await self.coord.join_group(
                "g",
                self.member_id,
                protocol_type="consumer",
                protocols=[("range", self.name.encode())],
                session_timeout_ms=SESSION_MS,
                rebalance_timeout_ms=1000,
                client_id=self.name,
            )
            if joined.error in (ErrorCode.MEMBER_ID_REQUIRED, ErrorCode.NONE):
                self.member_id = joined.member_id
            if joined.error is ErrorCode.UNKNOWN_MEMBER_ID:
                self.member_id = ""
            if joined.error is not ErrorCode.NONE:
                continue
            assignments = None
            if joined.leader_id == self.member_id:
                assignments = {m.member_id: b"for:" + m.metadata for m in joined.members}
            synced = await self.coord.sync_group(
                "g", self.member_id, joined.generation_id, assignments=assignments
            )
            if synced.error is ErrorCode.UNKNOWN_MEMBER_ID:
                self.member_id = ""
            if synced.error is not ErrorCode.NONE:
                continue
            self.generation, self.assignment, self.stable = (
                joined.generation_id,
                synced.assignment,
                True,
            )
            while not self.leaving.is_set():
                await self.clock.sleep(HEARTBEAT_S)
                code = self.coord.heartbeat("g", self.member_id, self.generation)
                if code is ErrorCode.UNKNOWN_MEMBER_ID:
                    self.member_id = ""
                if code is not ErrorCode.NONE:
                    break
        self.coord.leave_group("g", [LeaveMember(self.member_id)])


# Virtual time makes a run cheap, so several seeds: 7 only starts and leaves, the others crash
# members too (4 and 15 several in a row).
@pytest.mark.parametrize("seed", [7, 4, 6, 15])
async def test_random_joins_crashes_and_leaves_converge(
    tmp_path: Path, clock: VirtualClock, seed: int
) -> None:
    rng = random.Random(seed)
    config = BrokerConfig(group_initial_rebalance_delay_ms=50, group_min_session_timeout_ms=100)
    store = OffsetStore.open(tmp_path, fsync=FsyncPolicy.ALWAYS)
    coord = GroupCoordinator(config, clock, store)
    live: dict[str, tuple[SimulatedConsumer, asyncio.Task[None]]] = {}

    def start(n: int) -> None:
        consumer = SimulatedConsumer(coord, clock, f"c{n}")
        live[consumer.name] = (consumer, asyncio.create_task(consumer.run()))

    try:
        for n in range(4):
            start(n)
        for step in range(12):
            await clock.run_for(rng.uniform(20, 300))
            action = rng.choice(["start", "start", "crash", "leave"])
            if action == "start" or len(live) <= 2:
                start(100 + step)
            else:
                name = rng.choice(sorted(live))
                consumer, task = live.pop(name)
                if action == "crash":
                    task.cancel()  # gone without a word: its session must expire
                else:
                    consumer.leaving.set()
                    await clock.run_until(task, limit_s=10)

        def converged() -> bool:
            description = coord.describe_group("g")
            members = {m.client_id: m for m in description.members}
            consumers = [c for c, _ in live.values()]
            return (
                description.state is GroupState.STABLE
                and set(members) == set(live)
                and all(c.stable for c in consumers)
                and len({c.generation for c in consumers}) == 1
                and all(c.assignment == b"for:" + c.name.encode() for c in consumers)
                and all(members[c.name].member_id == c.member_id for c in consumers)
            )

        deadline = clock.monotonic() + 30
        while not converged():
            assert clock.monotonic() < deadline, coord.describe_group("g")
            await clock.run_for(50)
    finally:
        for consumer, task in live.values():
            consumer.leaving.set()
            task.cancel()
        await asyncio.gather(*(t for _, t in live.values()), return_exceptions=True)
        coord.close()
        await coord.wait_persisted()
        await store.close()
