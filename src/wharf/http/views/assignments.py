"""Decoding a consumer-group member's assignment for display (topic -> partitions).

Kafka consumers exchange assignments as ``ConsumerProtocolAssignment`` bytes: an int16 version
followed by the versioned body. kio supplies the schemas; a member whose assignment is empty or
not in the consumer protocol shows no partitions rather than failing the request.
"""

from __future__ import annotations

import struct
from functools import cache
from typing import Any

from kio.schema.consumer_protocol_assignment import v0, v1, v2, v3
from kio.serial import entity_reader
from kio.serial.errors import DecodeError

_SCHEMAS: dict[int, Any] = {
    0: v0.ConsumerProtocolAssignment,
    1: v1.ConsumerProtocolAssignment,
    2: v2.ConsumerProtocolAssignment,
    3: v3.ConsumerProtocolAssignment,
}


@cache
def _reader(version: int) -> Any:
    return entity_reader(_SCHEMAS[version])


def decode_assignment(raw: bytes) -> dict[str, list[int]]:
    """``{topic: sorted partitions}`` from consumer-protocol assignment bytes ({} if opaque)."""
    if len(raw) < 2:
        return {}
    (version,) = struct.unpack_from(">h", raw)
    reader = _reader(min(max(version, 0), 3))
    try:
        assignment, _ = reader(raw, 2)
    except (DecodeError, ValueError, TypeError, struct.error, IndexError):
        return {}
    result: dict[str, list[int]] = {}
    for entry in assignment.assigned_partitions:
        result.setdefault(str(entry.topic), []).extend(int(p) for p in entry.partitions)
    return {topic: sorted(parts) for topic, parts in sorted(result.items())}
