"""The durable form of a Stable group, so members keep their generation across a restart.

``persistence.py`` stores one snapshot per group in the offsets log (as Kafka stores group
metadata in ``__consumer_offsets``) each time a group becomes Stable, and a tombstone when it
becomes Empty. On start it restores the groups found there as Stable, with a fresh session
timer per member: members that are still alive heartbeat on without a rebalance; the others
are evicted when their session runs out.
"""

from __future__ import annotations

import msgspec

__all__ = ["GroupSnapshot", "MemberSnapshot", "decode_snapshot", "encode_snapshot"]


class MemberSnapshot(msgspec.Struct, frozen=True):
    member_id: str
    group_instance_id: str | None
    client_id: str
    client_host: str
    session_timeout_ms: int
    rebalance_timeout_ms: int
    protocols: list[tuple[str, bytes]]
    assignment: bytes


class GroupSnapshot(msgspec.Struct, frozen=True):
    version: int
    generation_id: int
    protocol_type: str
    protocol_name: str
    leader_id: str
    members: list[MemberSnapshot]


SNAPSHOT_VERSION = 1
_decoder = msgspec.json.Decoder(GroupSnapshot)


def encode_snapshot(snapshot: GroupSnapshot) -> bytes:
    return msgspec.json.encode(snapshot)


def decode_snapshot(data: bytes) -> GroupSnapshot | None:
    """The snapshot in ``data``, or ``None`` if it is not one this version understands."""
    try:
        snapshot = _decoder.decode(data)
    except msgspec.DecodeError:
        return None
    return snapshot if snapshot.version == SNAPSHOT_VERSION else None
