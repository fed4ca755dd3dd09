"""Length-prefixed framing of the Kafka protocol, sans I/O.

Every Kafka request and response is ``int32 size`` followed by ``size`` bytes. The
:class:`FrameDecoder` buffers what the transport delivers and hands out whole frames; it checks
the size prefix against a maximum *before* waiting for (and so buffering) the body, so a hostile
or confused peer cannot make the broker allocate gigabytes. A TLS ClientHello sent to the
plaintext port shows up as a size starting with ``0x16 0x03``; it is reported as such.

Received data is kept as the list of chunks the transport delivered (no growing buffer): a
frame's payload is copied exactly once, by one ``b"".join`` of the chunks (or memoryview slices
of them) it spans, when its last byte has arrived. A produce request of a megabyte arrives in
dozens of reads; appending each to one growing ``bytearray`` and slicing the frame out of it
would make three fresh megabyte-sized buffers per request, whose page faults cost milliseconds.

"Incomplete" is a return value (:data:`NEED_DATA`), "invalid" raises a
:class:`~wharf.protocol.kafka.errors.KafkaProtocolError`.
"""

from __future__ import annotations

import enum
import struct
from collections import deque
from typing import Final

from wharf.protocol.kafka.errors import (
    FrameTooLargeError,
    InvalidFrameLengthError,
    TlsOnPlainPortError,
)

__all__ = ["DEFAULT_MAX_FRAME_BYTES", "NEED_DATA", "FrameDecoder", "NeedData", "frame"]

DEFAULT_MAX_FRAME_BYTES: Final = 100 * 1024 * 1024  # Kafka's socket.request.max.bytes

_SIZE = struct.Struct(">i")
# Reads shorter than this are appended to a short last chunk instead of being kept apart.
_SMALL_READ: Final = 4096


class NeedData(enum.Enum):
    """Sentinel type: the decoder needs more bytes before it can produce a frame."""

    NEED_DATA = enum.auto()


NEED_DATA: Final = NeedData.NEED_DATA


def frame(payload: bytes) -> bytes:
    """Prefix ``payload`` with its 4-byte big-endian size."""
    return _SIZE.pack(len(payload)) + payload


class FrameDecoder:
    """Splits a byte stream into Kafka frames (payloads without the size prefix)."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._max = max_frame_bytes
        # Received and not yet returned, in order; a chunk partly returned is a memoryview of
        # its remainder (slicing a view copies nothing).
        self._chunks: deque[bytes | memoryview] = deque()
        self._buffered = 0
        self._first = True

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned in a frame."""
        return self._buffered

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes read from the transport."""
        if data:
            # bytes are kept by reference; a mutable buffer is copied so it cannot change under us
            chunk = data if isinstance(data, bytes) else bytes(data)
            chunks = self._chunks
            if len(chunk) < _SMALL_READ and chunks and len(chunks[-1]) < _SMALL_READ:
                # tiny reads (a peer trickling bytes) are merged, so that a frame held in
                # thousands of reads does not cost an object per read
                chunks[-1] = b"".join((chunks[-1], chunk))
            else:
                chunks.append(chunk)
            self._buffered += len(chunk)

    def next_frame(self) -> bytes | NeedData:
        """Return the next whole frame's payload, or :data:`NEED_DATA`."""
        if self._buffered < 4:
            return NEED_DATA
        head = self._head()
        (size,) = _SIZE.unpack_from(head)
        if self._first and head[0] == 0x16 and head[1] == 0x03:
            raise TlsOnPlainPortError("TLS handshake received on a plaintext Kafka listener")
        if size <= 0:
            raise InvalidFrameLengthError(f"invalid request size {size}")
        if size > self._max:
            raise FrameTooLargeError(f"request size {size} exceeds the maximum {self._max}")
        end = 4 + size
        if self._buffered < end:
            return NEED_DATA
        self._first = False
        self._buffered -= end
        chunks = self._chunks
        if len(head) >= end:  # the whole frame in the first chunk: the usual small request
            view = memoryview(head)
            payload = bytes(view[4:end])
            chunks.popleft()
            if len(head) > end:
                chunks.appendleft(view[end:])
            return payload
        parts: list[bytes | memoryview] = [memoryview(chunks.popleft())[4:]]
        missing = end - len(head)
        while missing:
            chunk = chunks.popleft()
            if len(chunk) <= missing:
                parts.append(chunk)
                missing -= len(chunk)
            else:
                view = memoryview(chunk)
                parts.append(view[:missing])
                chunks.appendleft(view[missing:])
                missing = 0
        return b"".join(parts)

    def _head(self) -> bytes | memoryview:
        """The first chunk, merged with the next ones until it holds the 4-byte size prefix."""
        chunks = self._chunks
        head = chunks[0]
        if len(head) >= 4:
            return head
        parts: list[bytes | memoryview] = []
        gathered = 0
        while gathered < 4:
            parts.append(chunks.popleft())
            gathered += len(parts[-1])
        merged = b"".join(parts)
        chunks.appendleft(merged)
        return merged
