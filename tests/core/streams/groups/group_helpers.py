"""What the consumer-group tests share: a consumer's subscription bytes and the client's side
of join and sync (used with the ``coordinator`` fixture of this directory's conftest)."""

import asyncio
import struct
from collections.abc import Sequence
from typing import TypeVar

from wharf.core.streams.errors import ErrorCode
from wharf.core.streams.groups.coordinator import GroupCoordinator
from wharf.core.streams.groups.types import JoinResult

SESSION_MS = 1000
T = TypeVar("T")


def subscription(*topics: str) -> bytes:
    out = struct.pack(">hi", 0, len(topics))
    for topic in topics:
        out += struct.pack(">h", len(topic)) + topic.encode()
    return out + struct.pack(">i", -1)


CONSUMER = [("range", subscription("events"))]


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
