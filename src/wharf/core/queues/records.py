"""The records of a queue's message log: encoded many to a batch, decoded one batch at a time.

Record layout (inside a Kafka RecordBatch v2, see :mod:`wharf.storage.record_batch`): key = the
message's sequence number (u64); value = the body; headers ``e`` exchange, ``k`` routing key,
``p`` AMQP property bytes, ``x`` expiry time (u64 ms, only when a TTL applies), ``t`` (empty)
for a transient message.

How it works: :class:`BatchBuilder` appends each record's bytes to one growing ``bytearray``
behind room for the 61-byte batch header, from pieces that are mostly precomputed (the
exchange/routing-key headers are cached per pair, small varints come from a table), and
:meth:`BatchBuilder.finish` packs the header and computes the one CRC-32C of the batch. So a
batch of a thousand messages costs one header, one CRC and one write. :func:`decode_messages`
is the reverse (recovery, and bodies not kept in memory): one CRC check per batch, then a
parse that knows the record layout, every length checked against what remains.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import crc32c

from wharf.core.queues.message import Message
from wharf.core.queues.properties import MalformedPropertiesError
from wharf.errors import CorruptBatchError, PreconditionError
from wharf.storage.compression import COMPRESSION_NONE
from wharf.storage.record_batch import (
    HEADER_SIZE,
    MAGIC,
    Record,
    decode_records,
    encode_varint,
    validate_batch,
)

__all__ = [
    "BatchBuilder",
    "DecodedMessage",
    "decode_messages",
    "stored_size",
]

_U64 = struct.Struct(">Q")
# base_offset, batch_length, partition_leader_epoch, magic, crc, attributes, last_offset_delta,
# base_timestamp, max_timestamp, producer_id, producer_epoch, base_sequence, records_count
_BATCH_HEADER = struct.Struct(">qiibIhiqqqhii")
_CRC = struct.Struct(">I")
_CRC_START = 21  # the CRC covers attributes .. end of batch
_LOG_OVERHEAD = 12  # base_offset + batch_length
_SMALL = tuple(bytes([2 * i]) for i in range(64))  # zigzag varints of 0..63
_KEY = b"\x10"  # key length 8 as a zigzag varint
_ROUTE_CACHE_LIMIT = 1024
# Bytes a record takes in the log beyond its body, properties, exchange and key (record
# framing, header keys, a share of the batch header), rounded up: used to tell live log bytes
# from dead ones.
_RECORD_OVERHEAD = 100


def stored_size(message: Message) -> int:
    """Estimated log bytes of ``message``'s record."""
    return (
        len(message.body)
        + len(message.properties)
        + len(message.exchange)
        + len(message.routing_key)
        + _RECORD_OVERHEAD
    )


def _varint(value: int) -> bytes:
    """``value`` as a zigzag varint."""
    if 0 <= value < _TABLE_SIZE:
        return _VARINTS[value]
    out = bytearray()
    encode_varint(value, out)
    return bytes(out)


def _two_bytes(value: int) -> bytes:
    z = value << 1
    return bytes(((z & 0x7F) | 0x80, z >> 7))


# Zigzag varints of 0 .. 8191 (one or two bytes): record lengths, offset deltas, body sizes.
_TABLE_SIZE = 8192
_VARINTS = _SMALL + tuple(_two_bytes(i) for i in range(64, _TABLE_SIZE))


class BatchBuilder:
    """Message records accumulated into one batch; see the module docstring."""

    __slots__ = ("_buf", "_routes", "base_ts", "count", "max_ts")

    def __init__(self) -> None:
        self._buf = bytearray(HEADER_SIZE)
        self._routes: dict[tuple[str, str], bytes] = {}
        self.count = 0
        self.base_ts = 0
        self.max_ts = 0

    @property
    def size(self) -> int:
        """Bytes the batch would take now."""
        return len(self._buf)

    def add(
        self, seq: int, message: Message, expires_at: int | None, now_ms: int, keep: bool
    ) -> None:
        """Append one message record (offset delta = records so far)."""
        if self.count == 0:
            self.base_ts = self.max_ts = now_ms
        elif now_ms > self.max_ts:
            self.max_ts = now_ms
        route = self._routes.get((message.exchange, message.routing_key))
        if route is None:
            route = self._route(message.exchange, message.routing_key)
        props = message.properties
        body = message.body
        headers = 3
        tail = b""
        if expires_at is not None:
            headers += 1
            tail = b"\x02x\x10" + _U64.pack(max(expires_at, 0))
        if not keep:
            headers += 1
            tail += b"\x02t\x00"
        ts_delta = now_ms - self.base_ts
        table = _VARINTS
        ts = table[ts_delta] if 0 <= ts_delta < _TABLE_SIZE else _varint(ts_delta)
        count = self.count
        delta = table[count] if count < _TABLE_SIZE else _varint(count)
        body_size = len(body)
        body_len = table[body_size] if body_size < _TABLE_SIZE else _varint(body_size)
        props_size = len(props)
        props_len = table[props_size] if props_size < _TABLE_SIZE else _varint(props_size)
        # attributes, key length, key, header count, "p" header key: 13 fixed bytes
        size = (
            13
            + len(ts)
            + len(delta)
            + len(body_len)
            + body_size
            + len(route)
            + len(props_len)
            + props_size
            + len(tail)
        )
        self._buf += b"".join(
            (
                table[size] if size < _TABLE_SIZE else _varint(size),
                b"\x00",
                ts,
                delta,
                _KEY,
                _U64.pack(seq),
                body_len,
                body,
                _SMALL[headers],
                route,
                b"\x02p",
                props_len,
                props,
                tail,
            )
        )
        self.count = count + 1

    def _route(self, exchange: str, routing_key: str) -> bytes:
        e = exchange.encode("utf-8")
        k = routing_key.encode("utf-8")
        route = b"".join((b"\x02e", _varint(len(e)), e, b"\x02k", _varint(len(k)), k))
        if len(self._routes) >= _ROUTE_CACHE_LIMIT:
            self._routes.clear()
        self._routes[(exchange, routing_key)] = route
        return route

    def restore(self, batch: bytearray, count: int) -> None:
        """Take back what :meth:`finish` returned (its write failed), to be written again."""
        if self.count:
            raise ValueError("restore into a builder that has records")
        self._buf = batch
        self.count = count

    def finish(self) -> bytearray:
        """The complete batch (base offset 0, assigned by the log); the builder is emptied."""
        buf = self._buf
        _BATCH_HEADER.pack_into(
            buf,
            0,
            0,
            len(buf) - _LOG_OVERHEAD,
            -1,
            MAGIC,
            0,
            0,
            self.count - 1,
            self.base_ts,
            self.max_ts,
            -1,
            -1,
            -1,
            self.count,
        )
        _CRC.pack_into(buf, 17, crc32c.crc32c(memoryview(buf)[_CRC_START:]))
        self._buf = bytearray(HEADER_SIZE)
        self.count = 0
        return buf


@dataclass(slots=True)
class DecodedMessage:
    """One message record read back from the log."""

    offset: int
    seq: int
    message: Message
    expires_at: int | None
    transient: bool


def _decode_message(record: Record) -> DecodedMessage:
    """The message a record holds (fields absent from a damaged record read as empty)."""
    fields = dict(record.headers)
    seq = _U64.unpack(record.key)[0] if record.key and len(record.key) == 8 else record.offset
    message = Message(
        (fields.get("e") or b"").decode("utf-8"),
        (fields.get("k") or b"").decode("utf-8"),
        fields.get("p") or b"\0\0",
        record.value or b"",
    )
    raw_expiry = fields.get("x")
    expires_at = _U64.unpack(raw_expiry)[0] if raw_expiry and len(raw_expiry) == 8 else None
    return DecodedMessage(record.offset, seq, message, expires_at, "t" in fields)


def decode_messages(batch: bytes | memoryview) -> list[DecodedMessage]:
    """Every message of one complete batch (CRC checked; CorruptBatchError when invalid).

    Uncompressed batches (all that Wharf writes) are parsed here directly, knowing the record
    layout; anything else goes through the generic decoder."""
    view = memoryview(batch)
    header = validate_batch(view, max_batch_bytes=max(len(view), HEADER_SIZE))
    if header.compression != COMPRESSION_NONE:
        return [_decode_message(record) for record in decode_records(batch)]
    data = bytes(view[HEADER_SIZE : header.size])
    try:
        out = _parse_records(data, header.records_count, header.base_offset)
        if any(not 0 <= m.offset - header.base_offset <= header.last_offset_delta for m in out):
            raise CorruptBatchError("record offset delta outside the batch")
    except (
        IndexError,
        struct.error,
        UnicodeDecodeError,
        MalformedPropertiesError,
        PreconditionError,
    ) as exc:
        raise CorruptBatchError(f"malformed message record: {exc}") from None
    if len(out) != header.records_count:
        raise CorruptBatchError("record count disagrees with the batch")
    return out


def _parse_records(data: bytes, count: int, base_offset: int) -> list[DecodedMessage]:
    out: list[DecodedMessage] = []
    n = len(data)
    pos = 0
    for _ in range(count):
        length, pos = _read_varint(data, pos)
        end = pos + length
        if length < 1 or end > n:
            raise CorruptBatchError(f"record length {length} overruns the batch")
        _, p = _read_varint(data, pos + 1)  # after the attributes: timestamp delta
        delta, p = _read_varint(data, p)
        key_len, p = _read_varint(data, p)
        offset = base_offset + delta
        seq = _U64.unpack_from(data, p)[0] if key_len == 8 else offset
        if key_len > 0:
            p += key_len
        body_len, p = _read_varint(data, p)
        if body_len > 0:
            body = data[p : p + body_len]
            p += body_len
        else:
            body = b""
        header_count, p = _read_varint(data, p)
        if header_count < 0 or header_count > end - p:
            raise CorruptBatchError(f"header count {header_count} overruns the record")
        exchange, routing_key, props, expires_at, transient, p = _parse_headers(
            data, p, header_count
        )
        if p != end:
            raise CorruptBatchError("record length disagrees with its fields")
        message = Message(exchange.decode("utf-8"), routing_key.decode("utf-8"), props, body)
        out.append(DecodedMessage(offset, seq, message, expires_at, transient))
        pos = end
    if pos != n:
        raise CorruptBatchError(f"{n - pos} bytes left after {count} records")
    return out


def _parse_headers(
    data: bytes, p: int, count: int
) -> tuple[bytes, bytes, bytes, int | None, bool, int]:
    """Exchange, routing key, properties, expiry, transient marker, and the end position."""
    exchange = routing_key = b""
    props = b"\0\0"
    expires_at: int | None = None
    transient = False
    for _ in range(count):
        name_len, p = _read_varint(data, p)
        if name_len > 0:
            name = data[p : p + name_len]
            p += name_len
        else:
            name = b""
        value_len, p = _read_varint(data, p)
        if value_len > 0:
            value = data[p : p + value_len]
            p += value_len
        else:
            value = b""
        if name == b"p":
            props = value or props
        elif name == b"e":
            exchange = value
        elif name == b"k":
            routing_key = value
        elif name == b"x" and len(value) == 8:
            expires_at = _U64.unpack(value)[0]
        elif name == b"t":
            transient = True
    return exchange, routing_key, props, expires_at, transient, p


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """A zigzag varint at ``pos`` (IndexError when cut off); returns (value, next position)."""
    b = data[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    z = b & 0x7F
    shift = 7
    pos += 1
    while True:
        b = data[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            return (z >> 1) ^ -(z & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptBatchError("varint longer than 10 bytes in record")
