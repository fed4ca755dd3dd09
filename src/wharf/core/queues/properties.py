"""AMQP basic content-header properties, kept as wire bytes and parsed only as far as needed.

Layout (AMQP 0-9-1 section 4.2.6.1): a 16-bit property-flags word, then the fields whose flag
bit is set, in flag order from bit 15 down. Bit 0 of a flags word announces a further flags word
(never used by class ``basic``, but accepted and skipped over)::

    bit 15 content-type     shortstr       bit 7  message-id   shortstr
    bit 14 content-encoding shortstr       bit 6  timestamp    u64
    bit 13 headers          field table    bit 5  type         shortstr
    bit 12 delivery-mode    octet          bit 4  user-id      shortstr
    bit 11 priority         octet          bit 3  app-id       shortstr
    bit 10 correlation-id   shortstr       bit 2  cluster-id   shortstr
    bit 9  reply-to         shortstr
    bit 8  expiration       shortstr

How it works: :func:`scan` walks the flags once, skipping the fields the broker does not need
and recording where the headers table sits, so that :func:`decode_headers` can decode it later
only when a headers exchange, x-delay or dead-lettering needs it. :func:`replace_headers`
rewrites only the headers field (and its flag bit); every other byte passes through unchanged.
Inside the headers table, :func:`edit_table` keeps untouched entries byte-exact as well. Field
tables are decoded and encoded with pamqp.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pamqp import decode as amqp_decode
from pamqp import encode as amqp_encode

from wharf.errors import InvalidArgumentError, PreconditionError

__all__ = [
    "FLAG_HEADERS",
    "MalformedPropertiesError",
    "ScannedProperties",
    "decode_headers",
    "decode_table",
    "drop_expiration",
    "edit_table",
    "encode_properties",
    "encode_table",
    "field_span",
    "replace_headers",
    "scan",
]

FLAG_CONTENT_TYPE = 1 << 15
FLAG_CONTENT_ENCODING = 1 << 14
FLAG_HEADERS = 1 << 13
FLAG_DELIVERY_MODE = 1 << 12
FLAG_PRIORITY = 1 << 11
FLAG_CORRELATION_ID = 1 << 10
FLAG_REPLY_TO = 1 << 9
FLAG_EXPIRATION = 1 << 8
FLAG_MESSAGE_ID = 1 << 7
FLAG_TIMESTAMP = 1 << 6
FLAG_TYPE = 1 << 5
FLAG_USER_ID = 1 << 4
FLAG_APP_ID = 1 << 3
FLAG_CLUSTER_ID = 1 << 2

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")

# (flag, kind) in wire order; kind: "s" shortstr, "t" table, "o" octet, "q" u64
_FIELDS: tuple[tuple[int, str], ...] = (
    (FLAG_CONTENT_TYPE, "s"),
    (FLAG_CONTENT_ENCODING, "s"),
    (FLAG_HEADERS, "t"),
    (FLAG_DELIVERY_MODE, "o"),
    (FLAG_PRIORITY, "o"),
    (FLAG_CORRELATION_ID, "s"),
    (FLAG_REPLY_TO, "s"),
    (FLAG_EXPIRATION, "s"),
    (FLAG_MESSAGE_ID, "s"),
    (FLAG_TIMESTAMP, "q"),
    (FLAG_TYPE, "s"),
    (FLAG_USER_ID, "s"),
    (FLAG_APP_ID, "s"),
    (FLAG_CLUSTER_ID, "s"),
)


class MalformedPropertiesError(InvalidArgumentError):
    """The property bytes do not follow the basic content-header layout."""


@dataclass(frozen=True, slots=True)
class ScannedProperties:
    """What the broker needs from a property list, plus where the headers table lies."""

    delivery_mode: int | None
    priority: int | None
    expiration_ms: int | None
    headers_span: tuple[int, int] | None  # [start, end) of the table incl. its length prefix
    user_id: str | None
    expiration_span: tuple[int, int] | None = None  # [start, end) of the expiration field


def _fields_start(data: bytes, flags: int) -> int:
    """Position of the first field, after any continuation flag words."""
    pos = 2
    while flags & 1:  # no basic fields live in continuation words: skip them
        if pos + 2 > len(data):
            raise MalformedPropertiesError("truncated property flags")
        flags = _U16.unpack_from(data, pos)[0]
        pos += 2
    return pos


def _field_end(data: bytes, pos: int, kind: str) -> int:
    n = len(data)
    if kind == "s":
        if pos >= n:
            raise MalformedPropertiesError("truncated short string property")
        end = pos + 1 + data[pos]
    elif kind == "t":
        if pos + 4 > n:
            raise MalformedPropertiesError("truncated headers table")
        end = pos + 4 + _U32.unpack_from(data, pos)[0]
    else:
        end = pos + (1 if kind == "o" else 8)
    if end > n:
        raise MalformedPropertiesError("property field runs past the end")
    return end


def scan(data: bytes) -> ScannedProperties:
    """Parse ``data`` (flags + fields) as far as the broker needs.

    Raises :class:`MalformedPropertiesError` on truncated or inconsistent bytes and
    :class:`PreconditionError` on an expiration that is not a non-negative integer (RabbitMQ
    answers the same with 406 PRECONDITION_FAILED). Results for short property lists are
    cached: publishers mostly send the same properties again and again.
    """
    if type(data) is not bytes:  # only immutable bytes can be cache keys
        return _scan(data)
    cached = _SCAN_CACHE.get(data)
    if cached is not None:
        return cached
    result = _scan(data)
    if len(data) <= _SCAN_CACHE_MAX_LEN:
        if len(_SCAN_CACHE) >= _SCAN_CACHE_SIZE:
            _SCAN_CACHE.clear()
        _SCAN_CACHE[data] = result
    return result


_SCAN_CACHE: dict[bytes, ScannedProperties] = {}
_SCAN_CACHE_SIZE = 512
_SCAN_CACHE_MAX_LEN = 96


def field_span(data: bytes, wanted: int) -> tuple[int, int] | None:
    """Where the field of flag ``wanted`` lies in ``data``, ``[start, end)`` with its length
    prefix, or None when absent. Raises :class:`MalformedPropertiesError` on bad bytes."""
    flags = _U16.unpack_from(data, 0)[0]
    if not flags & wanted:
        return None
    pos = _fields_start(data, flags)
    for flag, kind in _FIELDS:
        if flags & flag:
            end = _field_end(data, pos, kind)
            if flag == wanted:
                return pos, end
            pos = end
    return None


def _scan(data: bytes) -> ScannedProperties:
    n = len(data)
    if n < 2:
        raise MalformedPropertiesError("property list shorter than its flags word")
    flags = (data[0] << 8) | data[1]
    pos = _fields_start(data, flags) if flags & 1 else 2
    delivery_mode: int | None = None
    priority: int | None = None
    headers: tuple[int, int] | None = None
    expiration: tuple[int, int] | None = None
    user_id: tuple[int, int] | None = None
    for flag, kind in _FIELDS:
        if not flags & flag:
            continue
        if kind == "o":
            if pos >= n:
                raise MalformedPropertiesError("property field runs past the end")
            if flag == FLAG_DELIVERY_MODE:
                delivery_mode = data[pos]
            else:
                priority = data[pos]
            pos += 1
            continue
        end = _field_end(data, pos, kind)
        if flag == FLAG_HEADERS:
            headers = (pos, end)
        elif flag == FLAG_EXPIRATION:
            expiration = (pos, end)
        elif flag == FLAG_USER_ID:
            user_id = (pos, end)
        pos = end
    if pos != n:
        raise MalformedPropertiesError("trailing bytes after the property fields")
    return ScannedProperties(
        delivery_mode=delivery_mode,
        priority=priority,
        expiration_ms=(
            None
            if expiration is None
            else _parse_expiration(data[expiration[0] + 1 : expiration[1]])
        ),
        headers_span=headers,
        expiration_span=expiration,
        user_id=(
            None
            if user_id is None
            else data[user_id[0] + 1 : user_id[1]].decode("utf-8", "replace")
        ),
    )


def _parse_expiration(raw: bytes) -> int:
    text = raw.decode("ascii", "replace")
    if not text.isdigit():
        raise PreconditionError(f"invalid expiration {text!r}: must be a non-negative integer")
    return int(text)


def decode_table(raw: bytes) -> dict[str, Any]:
    """Decode a field table (with its 4-byte length prefix)."""
    try:
        consumed, table = amqp_decode.field_table(raw)
    except (ValueError, UnicodeDecodeError, KeyError, IndexError) as exc:
        raise MalformedPropertiesError(f"malformed field table: {exc}") from None
    if consumed != len(raw):
        raise MalformedPropertiesError("field table length does not match its content")
    return dict(table)


def encode_table(table: Mapping[str, Any]) -> bytes:
    """Encode a field table (with its length prefix); raises InvalidArgumentError on bad values."""
    try:
        return bytes(amqp_encode.field_table(dict(table)))
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"cannot encode field table: {exc}") from None


def decode_headers(data: bytes, scanned: ScannedProperties) -> dict[str, Any]:
    """The headers table of ``data`` as a dict (empty when absent)."""
    if scanned.headers_span is None:
        return {}
    start, end = scanned.headers_span
    return decode_table(data[start:end])


def _table_entries(raw: bytes) -> list[tuple[str, bytes]]:
    """Split a field table into (key, raw entry bytes incl. key) without re-encoding values."""
    entries: list[tuple[str, bytes]] = []
    end = 4 + _U32.unpack_from(raw, 0)[0]
    pos = 4
    try:
        while pos < end:
            klen = raw[pos]
            key = raw[pos + 1 : pos + 1 + klen].decode("utf-8")
            consumed, _ = amqp_decode.embedded_value(raw[pos + 1 + klen : end])
            if consumed == 0:
                raise ValueError("empty field value")
            nxt = pos + 1 + klen + consumed
            if nxt > end:
                raise ValueError("field value runs past the table")
            entries.append((key, raw[pos:nxt]))
            pos = nxt
    except (ValueError, UnicodeDecodeError, KeyError, IndexError) as exc:
        raise MalformedPropertiesError(f"malformed field table: {exc}") from None
    return entries


def edit_table(raw: bytes, set_: Mapping[str, Any], remove: Iterable[str] = ()) -> bytes:
    """Return field table ``raw`` with keys in ``set_`` replaced/added and ``remove`` dropped.

    Entries not touched keep their exact bytes (values pamqp could not re-encode survive).
    """
    drop = set(remove) | set(set_)
    kept = [entry for key, entry in _table_entries(raw) if key not in drop]
    for key, value in set_.items():
        try:
            kept.append(amqp_encode.short_string(key) + amqp_encode.encode_table_value(value))
        except (TypeError, ValueError) as exc:
            raise InvalidArgumentError(f"cannot encode header {key!r}: {exc}") from None
    body = b"".join(kept)
    return _U32.pack(len(body)) + body


def replace_headers(
    data: bytes, scanned: ScannedProperties, set_: Mapping[str, Any], remove: Iterable[str] = ()
) -> bytes:
    """Property bytes with the headers table edited; all other fields stay byte-exact."""
    flags = _U16.unpack_from(data, 0)[0]
    if scanned.headers_span is not None:
        start, end = scanned.headers_span
        new_table = edit_table(data[start:end], set_, remove)
        return data[:start] + new_table + data[end:]
    remove_set = set(remove)
    additions = {k: v for k, v in set_.items() if k not in remove_set}
    if not additions:
        return data
    new_table = edit_table(_U32.pack(0), additions)
    # The headers field sits after content-type and content-encoding (and any flag words).
    pos = _fields_start(data, flags)
    for flag in (FLAG_CONTENT_TYPE, FLAG_CONTENT_ENCODING):
        if flags & flag:
            pos += 1 + data[pos]
    return _U16.pack(flags | FLAG_HEADERS) + data[2:pos] + new_table + data[pos:]


def drop_expiration(data: bytes, scanned: ScannedProperties) -> bytes:
    """Property bytes without the expiration field (dead-lettering after a per-message TTL)."""
    if scanned.expiration_span is None:
        return data
    start, end = scanned.expiration_span
    flags = _U16.unpack_from(data, 0)[0] & ~FLAG_EXPIRATION
    return _U16.pack(flags) + data[2:start] + data[end:]


def encode_properties(
    *,
    content_type: str | None = None,
    content_encoding: str | None = None,
    headers: Mapping[str, Any] | None = None,
    delivery_mode: int | None = None,
    priority: int | None = None,
    correlation_id: str | None = None,
    reply_to: str | None = None,
    expiration: str | None = None,
    message_id: str | None = None,
    timestamp: int | None = None,
    type: str | None = None,
    user_id: str | None = None,
    app_id: str | None = None,
) -> bytes:
    """Encode a property list from plain values (for the embedded API and HTTP publish)."""
    flags = 0
    parts: list[bytes] = []

    def short(flag: int, value: str | None) -> None:
        nonlocal flags
        if value is None:
            return
        raw = value.encode("utf-8")
        if len(raw) > 255:
            raise InvalidArgumentError(f"property value longer than 255 bytes: {value[:20]!r}...")
        flags |= flag
        parts.append(bytes([len(raw)]) + raw)

    def octet(flag: int, value: int | None) -> None:
        nonlocal flags
        if value is None:
            return
        if not 0 <= value <= 255:
            raise InvalidArgumentError(f"octet property out of range: {value}")
        flags |= flag
        parts.append(bytes([value]))

    short(FLAG_CONTENT_TYPE, content_type)
    short(FLAG_CONTENT_ENCODING, content_encoding)
    if headers is not None:
        flags |= FLAG_HEADERS
        parts.append(encode_table(headers))
    octet(FLAG_DELIVERY_MODE, delivery_mode)
    octet(FLAG_PRIORITY, priority)
    short(FLAG_CORRELATION_ID, correlation_id)
    short(FLAG_REPLY_TO, reply_to)
    short(FLAG_EXPIRATION, expiration)
    short(FLAG_MESSAGE_ID, message_id)
    if timestamp is not None:
        flags |= FLAG_TIMESTAMP
        parts.append(_U64.pack(timestamp))
    short(FLAG_TYPE, type)
    short(FLAG_USER_ID, user_id)
    short(FLAG_APP_ID, app_id)
    return _U16.pack(flags) + b"".join(parts)
