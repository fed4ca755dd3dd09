"""Reading the topic list out of a ``consumer`` group member's subscription metadata.

The coordinator treats member metadata as opaque bytes except in one place: deleting committed
offsets (OffsetDelete) must be refused for topics a live member subscribes to. Consumer-protocol
metadata starts ``version int16 | topic count int32 | (length int16 | utf-8 name) * count``
(every version keeps this prefix); anything after it is not needed here.
"""

from __future__ import annotations

import struct

__all__ = ["subscribed_topics"]

_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")


def subscribed_topics(metadata: bytes) -> frozenset[str] | None:
    """The topics in consumer-protocol ``metadata``, or ``None`` if it cannot be parsed."""
    try:
        pos = _I16.size
        (count,) = _I32.unpack_from(metadata, pos)
        pos += _I32.size
        if count < 0 or count > (len(metadata) - pos) // _I16.size:
            return None
        topics = set()
        for _ in range(count):
            (length,) = _I16.unpack_from(metadata, pos)
            pos += _I16.size
            if length < 0 or pos + length > len(metadata):
                return None
            topics.add(metadata[pos : pos + length].decode("utf-8"))
            pos += length
    except (struct.error, UnicodeDecodeError):
        return None
    return frozenset(topics)
