"""Kafka request decoding and response encoding for the server side, sans I/O.

How it works: :class:`ServerCodec` owns a :class:`~wharf.protocol.kafka.framing.FrameDecoder`.
``receive_data(bytes)`` buffers input; ``next_event()`` returns the next decoded
:class:`KafkaRequest` (or :data:`NEED_DATA`). Decoding reads the fixed header prefix (api key,
version, correlation id), checks the API is served at that version, then lets ``kio`` parse the
request header (v1, or v2 with tagged fields for flexible versions) and the body. ``records``
fields stay raw bytes: batches are never decoded here.

An ApiVersions request at a version Wharf does not know is not an error: it becomes an
:class:`ApiVersionsFallback` event, answered with a v0 body carrying UNSUPPORTED_VERSION and
the supported ranges, so that the client can downgrade (KIP-511).

``encode_response`` writes the response header (v0: correlation id; v1: plus an empty tagged
field section; ApiVersions always v0) and the body with ``kio``'s writer, which leaves out
tagged fields that hold their default value.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from functools import cache
from typing import Any, Final

from kio.index import load_request_schema
from kio.schema.response_header.v1.header import ResponseHeader as ResponseHeaderV1
from kio.serial import entity_reader, entity_writer
from kio.serial.errors import DecodeError

from wharf.protocol.kafka.errors import (
    TruncatedRequestError,
    UnknownApiKeyError,
    UnsupportedVersionError,
)
from wharf.protocol.kafka.framing import (
    DEFAULT_MAX_FRAME_BYTES,
    NEED_DATA,
    FrameDecoder,
    NeedData,
)
from wharf.protocol.kafka.versions import SUPPORTED_VERSIONS

__all__ = [
    "API_VERSIONS_KEY",
    "ApiVersionsFallback",
    "KafkaRequest",
    "ServerCodec",
    "decode_request",
    "encode_response",
]

API_VERSIONS_KEY: Final = 18

_PREFIX = struct.Struct(">hhi")
_I32 = struct.Struct(">i")


@dataclass(frozen=True, slots=True)
class KafkaRequest:
    """One decoded request: header fields and the ``kio`` request payload."""

    api_key: int
    api_version: int
    correlation_id: int
    client_id: str | None
    body: Any  # a kio request payload of type load_request_schema(api_key, api_version)
    size: int  # bytes on the wire, without the size prefix


@dataclass(frozen=True, slots=True)
class ApiVersionsFallback:
    """An ApiVersions request at a version newer than Wharf knows."""

    api_version: int
    correlation_id: int
    client_id: str | None


@cache
def _readers(api_key: int, api_version: int) -> tuple[Any, Any]:
    schema = load_request_schema(api_key, api_version)
    return entity_reader(schema.__header_schema__), entity_reader(schema)


def _client_id(payload: bytes) -> str | None:
    """Best-effort client id from a header prefix (legacy nullable string at offset 8)."""
    if len(payload) < 10:
        return None
    (length,) = struct.unpack_from(">h", payload, 8)
    if length < 0 or len(payload) < 10 + length:
        return None
    return payload[10 : 10 + length].decode("utf-8", "replace")


def decode_request(payload: bytes) -> KafkaRequest | ApiVersionsFallback:
    """Decode one frame's payload (size prefix already removed)."""
    if len(payload) < _PREFIX.size:
        raise TruncatedRequestError(f"request header truncated ({len(payload)} bytes)")
    api_key, api_version, correlation_id = _PREFIX.unpack_from(payload)
    bounds = SUPPORTED_VERSIONS.get(api_key)
    if bounds is None:
        raise UnknownApiKeyError(f"unsupported API key {api_key}")
    if not bounds[0] <= api_version <= bounds[1]:
        if api_key == API_VERSIONS_KEY and api_version > bounds[1]:
            return ApiVersionsFallback(api_version, correlation_id, _client_id(payload))
        raise UnsupportedVersionError(
            f"API key {api_key} version {api_version} outside {bounds[0]}..{bounds[1]}"
        )
    header_reader, body_reader = _readers(api_key, api_version)
    try:
        header, offset = header_reader(payload, 0)
        body, size = body_reader(payload, offset)
    except (DecodeError, ValueError, TypeError) as exc:
        raise TruncatedRequestError(
            f"malformed API key {api_key} v{api_version} request: {exc}"
        ) from exc
    return KafkaRequest(
        api_key=api_key,
        api_version=api_version,
        correlation_id=correlation_id,
        client_id=header.client_id,
        body=body,
        size=len(payload),
    )


_WRITERS: dict[type[Any], tuple[Any, bool]] = {}


def _writer(response_type: type[Any]) -> tuple[Any, bool]:
    found = _WRITERS.get(response_type)
    if found is None:
        flexible_header = response_type.__header_schema__ is ResponseHeaderV1
        found = _WRITERS[response_type] = (entity_writer(response_type), flexible_header)
    return found


def encode_response(correlation_id: int, response: Any) -> bytes:
    """Serialise a ``kio`` response payload into a whole frame (size prefix included)."""
    write, flexible_header = _writer(type(response))
    buffer = io.BytesIO()
    buffer.write(b"\0\0\0\0")
    buffer.write(_I32.pack(correlation_id))
    if flexible_header:
        buffer.write(b"\0")
    write(buffer, response)
    data = buffer.getbuffer()
    _I32.pack_into(data, 0, len(data) - 4)
    del data
    return buffer.getvalue()


class ServerCodec:
    """The server side of one Kafka connection: bytes in, requests out."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self._frames = FrameDecoder(max_frame_bytes)

    def receive_data(self, data: bytes) -> None:
        """Add bytes read from the transport."""
        self._frames.receive_data(data)

    def next_event(self) -> KafkaRequest | ApiVersionsFallback | NeedData:
        """The next decoded request, or :data:`NEED_DATA`; raises on malformed input."""
        payload = self._frames.next_frame()
        if payload is NEED_DATA:
            return NEED_DATA
        assert isinstance(payload, bytes)
        return decode_request(payload)
