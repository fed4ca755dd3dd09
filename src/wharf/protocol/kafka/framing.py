"""Length-prefixed framing of the Kafka protocol, sans I/O.

Every Kafka request and response is ``int32 size`` followed by ``size`` bytes. The
:class:`FrameDecoder` buffers what the transport delivers and hands out whole frames; it checks
the size prefix against a maximum *before* waiting for (and so buffering) the body, so a hostile
or confused peer cannot make the broker allocate gigabytes. A TLS ClientHello sent to the
plaintext port shows up as a size starting with ``0x16 0x03``; it is reported as such.

"Incomplete" is a return value (:data:`NEED_DATA`), "invalid" raises a
:class:`~wharf.protocol.kafka.errors.KafkaProtocolError`.
"""

from __future__ import annotations

import enum
import struct
from typing import Final

from wharf.protocol.kafka.errors import (
    FrameTooLargeError,
    InvalidFrameLengthError,
    TlsOnPlainPortError,
)

__all__ = ["DEFAULT_MAX_FRAME_BYTES", "NEED_DATA", "FrameDecoder", "NeedData", "frame"]

DEFAULT_MAX_FRAME_BYTES: Final = 100 * 1024 * 1024  # Kafka's socket.request.max.bytes

_SIZE = struct.Struct(">i")


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
        self._buffer = bytearray()
        self._pos = 0
        self._first = True

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned in a frame."""
        return len(self._buffer) - self._pos

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the transport."""
        if self._pos and self._pos == len(self._buffer):
            self._buffer.clear()
            self._pos = 0
        self._buffer += data

    def next_frame(self) -> bytes | NeedData:
        """Return the next whole frame's payload, or :data:`NEED_DATA`."""
        buf = self._buffer
        pos = self._pos
        if len(buf) - pos < 4:
            return NEED_DATA
        (size,) = _SIZE.unpack_from(buf, pos)
        if self._first and buf[pos] == 0x16 and buf[pos + 1] == 0x03:
            raise TlsOnPlainPortError("TLS handshake received on a plaintext Kafka listener")
        if size <= 0:
            raise InvalidFrameLengthError(f"invalid request size {size}")
        if size > self._max:
            raise FrameTooLargeError(f"request size {size} exceeds the maximum {self._max}")
        end = pos + 4 + size
        if len(buf) < end:
            return NEED_DATA
        payload = bytes(buf[pos + 4 : end])
        self._first = False
        if end == len(buf):
            buf.clear()
            self._pos = 0
        else:
            self._pos = end
            if end > 1 << 20:
                del buf[:end]
                self._pos = 0
        return payload
