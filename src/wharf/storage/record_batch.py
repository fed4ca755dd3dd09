"""Kafka RecordBatch v2 (magic 2): the one on-disk and on-wire format of every Wharf log.

Batch layout, all integers big-endian, 61-byte header then the records::

    offset size field                   notes
    0      8    base_offset             int64, assigned by the log on append (outside the CRC)
    8      4    batch_length            int32, bytes after this field (whole batch = 12 + this)
    12     4    partition_leader_epoch  int32, outside the CRC
    16     1    magic                   int8, always 2
    17     4    crc                     uint32, CRC-32C of bytes 21 .. end of batch
    21     2    attributes              int16: bits 0-2 compression (0 none, 1 gzip, 2 snappy,
                                        3 lz4, 4 zstd), bit 3 timestamp type (1 = LogAppendTime),
                                        bit 4 transactional, bit 5 control batch
    23     4    last_offset_delta       int32, last offset = base_offset + this
    27     8    base_timestamp          int64, milliseconds
    35     8    max_timestamp           int64
    43     8    producer_id             int64, -1 when not idempotent
    51     2    producer_epoch          int16
    53     4    base_sequence           int32
    57     4    records_count           int32
    61     ..   records                 compressed as a whole when attributes say so

Each record inside the (decompressed) records section::

    length varint | attributes int8 | timestamp_delta varlong | offset_delta varint
    | key_length varint | key | value_length varint | value
    | header_count varint | (key_length varint | key utf-8 | value_length varint | value) * n

Varints are zigzag-encoded (protobuf style); a length of -1 means null.

How it works: the append path validates each batch once (:func:`validate_batch`: header checks
plus one CRC-32C over the batch, done in C; :mod:`wharf.storage.validated` for a whole append)
and patches in the base offset (8 bytes, no re-encode). Records are decoded only when Wharf
itself needs them (:func:`decode_records`), and every length read from the input is checked
against what remains before anything is sliced or allocated. The codecs of compressed records
sections are in :mod:`wharf.storage.compression`.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import crc32c

from wharf.errors import BatchTooLargeError, CorruptBatchError
from wharf.storage.compression import COMPRESSION_NONE, compress, decompress

__all__ = [
    "HEADER_SIZE",
    "MAGIC",
    "BatchHeader",
    "Record",
    "RecordInput",
    "build_batch",
    "check_header",
    "decode_records",
    "decode_varint",
    "encode_varint",
    "iter_batches",
    "parse_header",
    "set_base_offset",
    "validate_batch",
]

HEADER_SIZE = 61
MAGIC = 2
# Bytes of a batch before the CRC-covered part begins (the attributes field).
CRC_START = 21
# Bytes before batch_length's payload: base_offset + batch_length.
LOG_OVERHEAD = 12
# The smallest legal batch_length: the header after the length field.
MIN_BATCH_LENGTH = HEADER_SIZE - LOG_OVERHEAD
# Default ceiling on one whole batch (Kafka's message.max.bytes default).
DEFAULT_MAX_BATCH_BYTES = 1_048_588
# Default ceiling on the decompressed records section of one batch.
DEFAULT_MAX_UNCOMPRESSED_BYTES = 64 << 20

_COMPRESSION_MASK = 0x07
TIMESTAMP_TYPE_BIT = 0x08
_TRANSACTIONAL_BIT = 0x10
_CONTROL_BIT = 0x20

HEADER = struct.Struct(">qiibIhiqqqhii")
# The fields the append path needs, read from offset 8: batch_length, partition_leader_epoch,
# magic, crc, last_offset_delta, max_timestamp, records_count.
APPEND_FIELDS = struct.Struct(">iibI2xi8xq14xi")
_BASE_OFFSET = struct.Struct(">q")
CRC_FIELD = struct.Struct(">I")  # just before CRC_START
_BLOCK_LEN = struct.Struct(">i")
# Where the fields LogAppendTime rewrites sit in a batch.
ATTRIBUTES_AT = CRC_START
MAX_TIMESTAMP_AT = 35

assert HEADER.size == HEADER_SIZE

# A BatchHeader from the unpacked fields without the keyword handling of its constructor.
_new_tuple = tuple.__new__


class BatchHeader(NamedTuple):
    """The fixed 61-byte header of one RecordBatch v2 (a tuple: one is made per batch read)."""

    base_offset: int
    batch_length: int
    partition_leader_epoch: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    base_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    records_count: int

    @property
    def size(self) -> int:
        """Bytes the whole batch occupies (header plus records)."""
        return self.batch_length + LOG_OVERHEAD

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def compression(self) -> int:
        return self.attributes & _COMPRESSION_MASK

    @property
    def timestamp_type(self) -> int:
        """0 = CreateTime, 1 = LogAppendTime."""
        return 1 if self.attributes & TIMESTAMP_TYPE_BIT else 0

    @property
    def is_transactional(self) -> bool:
        return bool(self.attributes & _TRANSACTIONAL_BIT)

    @property
    def is_control(self) -> bool:
        return bool(self.attributes & _CONTROL_BIT)


def parse_header(buf: bytes | bytearray | memoryview, pos: int = 0) -> BatchHeader:
    """Read the header at ``pos`` without any validation beyond its presence."""
    if pos < 0 or len(buf) - pos < HEADER_SIZE:
        raise CorruptBatchError(
            f"need {HEADER_SIZE} header bytes at position {pos}, have {max(0, len(buf) - pos)}"
        )
    return _new_tuple(BatchHeader, HEADER.unpack_from(buf, pos))


def validate_batch(
    view: bytes | bytearray | memoryview,
    pos: int = 0,
    *,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
) -> BatchHeader:
    """Check the batch starting at ``pos`` of ``view``: length, magic, offsets and CRC-32C.

    Raises :class:`CorruptBatchError` if the batch is incomplete or invalid.
    """
    header = parse_header(view, pos)
    check_header(header, len(view) - pos, max_batch_bytes)
    end = pos + header.size
    actual = crc32c.crc32c(memoryview(view)[pos + CRC_START : end])
    if actual != header.crc:
        raise CorruptBatchError(
            f"CRC mismatch in batch at offset {header.base_offset}: "
            f"stored {header.crc:#010x}, computed {actual:#010x}"
        )
    return header


def too_large_message(size: int, max_batch_bytes: int) -> str:
    """What :class:`BatchTooLargeError` says, wherever the limit is checked."""
    return f"batch of {size} bytes exceeds the limit of {max_batch_bytes} bytes"


def check_header(header: BatchHeader, available: int, max_batch_bytes: int) -> None:
    """Raise :class:`CorruptBatchError` unless the header is sane for ``available`` bytes
    (:class:`BatchTooLargeError` for a batch above ``max_batch_bytes``)."""
    if header.magic != MAGIC:
        raise CorruptBatchError(f"unsupported batch magic {header.magic} (only 2 is accepted)")
    if header.batch_length < MIN_BATCH_LENGTH:
        raise CorruptBatchError(f"batch length {header.batch_length} is below the minimum")
    if header.size > max_batch_bytes:
        raise BatchTooLargeError(too_large_message(header.size, max_batch_bytes))
    if header.size > available:
        raise CorruptBatchError(
            f"incomplete batch: {header.size} bytes announced, {available} present"
        )
    if header.last_offset_delta < 0 or header.records_count < 0:
        raise CorruptBatchError(
            f"negative last offset delta ({header.last_offset_delta}) "
            f"or record count ({header.records_count})"
        )


def iter_batches(
    buf: bytes | bytearray | memoryview, *, max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
) -> Iterator[tuple[int, BatchHeader]]:
    """Yield ``(position, header)`` of each complete, valid batch in ``buf``.

    A trailing partial batch (too few bytes for its header or for its announced length) is not
    yielded; a malformed batch raises :class:`CorruptBatchError`.
    """
    pos = 0
    n = len(buf)
    while n - pos >= LOG_OVERHEAD:
        (length,) = _BLOCK_LEN.unpack_from(buf, pos + 8)
        if length < MIN_BATCH_LENGTH:
            raise CorruptBatchError(f"batch length {length} is below the minimum")
        if length + LOG_OVERHEAD > max_batch_bytes:
            raise BatchTooLargeError(too_large_message(length + LOG_OVERHEAD, max_batch_bytes))
        if n - pos < length + LOG_OVERHEAD:
            return
        header = validate_batch(buf, pos, max_batch_bytes=max_batch_bytes)
        yield pos, header
        pos += header.size


def set_base_offset(buf: bytearray | memoryview, pos: int, base_offset: int) -> None:
    """Assign the base offset of the batch at ``pos`` in place (the CRC does not cover it)."""
    _BASE_OFFSET.pack_into(buf, pos, base_offset)


# --------------------------------------------------------------------------- records


class RecordInput(NamedTuple):
    """One record Wharf encodes itself (AMQP message, offset commit, ...)."""

    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes | None]] = ()
    timestamp_ms: int | None = None


class Record(NamedTuple):
    """One decoded record with its absolute offset."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes | None], ...]


def encode_varint(value: int, out: bytearray) -> None:
    """Append ``value`` (a signed 64-bit integer) as a zigzag varint."""
    z = (value << 1) ^ (value >> 63)
    if 0 <= z < 0x80:
        out.append(z)
        return
    z &= 0xFFFFFFFFFFFFFFFF
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)


def _encode_bytes(data: bytes | None, out: bytearray) -> None:
    if data is None:
        out.append(1)  # zigzag(-1)
        return
    encode_varint(len(data), out)
    out += data


def _encode_record(
    rec: RecordInput, offset_delta: int, timestamp_delta: int, out: bytearray
) -> None:
    body = bytearray(b"\x00")  # record attributes: unused, always 0
    encode_varint(timestamp_delta, body)
    encode_varint(offset_delta, body)
    _encode_bytes(rec.key, body)
    _encode_bytes(rec.value, body)
    encode_varint(len(rec.headers), body)
    for hkey, hvalue in rec.headers:
        _encode_bytes(hkey.encode("utf-8"), body)
        _encode_bytes(hvalue, body)
    encode_varint(len(body), out)
    out += body


def build_batch(
    records: Sequence[RecordInput],
    *,
    base_offset: int = 0,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    compression: int = COMPRESSION_NONE,
    now_ms: int | None = None,
) -> bytes:
    """Encode ``records`` into one RecordBatch v2.

    Records without a timestamp get ``now_ms`` (the wall clock when not given).
    """
    if not records:
        raise ValueError("a batch needs at least one record")
    if now_ms is None:
        now_ms = time.time_ns() // 1_000_000
    stamps = [now_ms if r.timestamp_ms is None else r.timestamp_ms for r in records]
    base_ts = stamps[0]
    body = bytearray()
    for delta, (rec, ts) in enumerate(zip(records, stamps, strict=True)):
        _encode_record(rec, delta, ts - base_ts, body)
    payload = bytes(body) if compression == COMPRESSION_NONE else compress(compression, bytes(body))
    attributes = compression & _COMPRESSION_MASK
    batch = bytearray(HEADER_SIZE)
    batch += payload
    HEADER.pack_into(
        batch,
        0,
        base_offset,
        len(batch) - LOG_OVERHEAD,
        -1,
        MAGIC,
        0,
        attributes,
        len(records) - 1,
        base_ts,
        max(stamps),
        producer_id,
        producer_epoch,
        base_sequence,
        len(records),
    )
    CRC_FIELD.pack_into(batch, 17, crc32c.crc32c(memoryview(batch)[CRC_START:]))
    return bytes(batch)


def _varint_slow(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    shift = 0
    z = 0
    while True:
        if pos >= end:
            raise CorruptBatchError("truncated varint in record")
        b = buf[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if not b & 0x80:
            return (z >> 1) ^ -(z & 1), pos
        shift += 7
        if shift > 63:
            raise CorruptBatchError("varint longer than 10 bytes in record")


def _varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    """Zigzag varint at ``pos`` (not reading at or past ``end``): ``(value, next position)``."""
    if pos < end:
        b = buf[pos]
        if b < 0x80:
            return (b >> 1) ^ -(b & 1), pos + 1
    return _varint_slow(buf, pos, end)


def _field(buf: memoryview, pos: int, end: int) -> tuple[bytes | None, int]:
    """A length-prefixed, nullable byte string: ``(value, next position)``."""
    n, pos = _varint(buf, pos, end)
    if n == -1:
        return None, pos
    if n < 0 or n > end - pos:
        raise CorruptBatchError(f"record field of {n} bytes overruns the record ({end - pos} left)")
    return bytes(buf[pos : pos + n]), pos + n


def decode_varint(buf: bytes | memoryview, pos: int = 0) -> tuple[int, int]:
    """Read a zigzag varint at ``pos``; returns ``(value, position after it)``."""
    view = memoryview(buf)
    return _varint(view, pos, len(view))


def decode_records(
    batch: bytes | bytearray | memoryview,
    *,
    max_uncompressed_bytes: int = DEFAULT_MAX_UNCOMPRESSED_BYTES,
) -> list[Record]:
    """Decode every record of one complete batch (validated: length, magic, CRC).

    Handles all four codecs; control batches decode like any other (their key says what they
    mark). Raises :class:`CorruptBatchError` on any inconsistency.
    """
    view = memoryview(batch)
    header = validate_batch(view, max_batch_bytes=max(len(view), HEADER_SIZE))
    buf = view[HEADER_SIZE : header.size]
    if header.compression != COMPRESSION_NONE:
        buf = memoryview(decompress(header.compression, buf, max_uncompressed_bytes))
    total = len(buf)
    base_offset = header.base_offset
    base_ts = header.base_timestamp
    append_time = header.max_timestamp if header.timestamp_type == 1 else None
    max_delta = header.last_offset_delta
    records: list[Record] = []
    pos = 0
    # The count is checked against the bytes as records are read: never preallocated from it.
    for _ in range(header.records_count):
        length, pos = _varint(buf, pos, total)
        if length < 1 or length > total - pos:
            raise CorruptBatchError(f"record length {length} overruns the batch")
        end = pos + length
        pos += 1  # record attributes: unused
        ts_delta, pos = _varint(buf, pos, end)
        offset_delta, pos = _varint(buf, pos, end)
        if offset_delta < 0 or offset_delta > max_delta:
            raise CorruptBatchError(f"record offset delta {offset_delta} outside the batch")
        key, pos = _field(buf, pos, end)
        value, pos = _field(buf, pos, end)
        count, pos = _varint(buf, pos, end)
        if count < 0 or count > end - pos:
            raise CorruptBatchError(f"header count {count} overruns the record")
        headers: tuple[tuple[str, bytes | None], ...] = ()
        if count:
            items: list[tuple[str, bytes | None]] = []
            for _h in range(count):
                hkey, pos = _field(buf, pos, end)
                if hkey is None:
                    raise CorruptBatchError("record header key is null")
                try:
                    name = hkey.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise CorruptBatchError("record header key is not UTF-8") from exc
                hvalue, pos = _field(buf, pos, end)
                items.append((name, hvalue))
            headers = tuple(items)
        if pos != end:
            raise CorruptBatchError("record length disagrees with its fields")
        records.append(
            Record(
                base_offset + offset_delta,
                base_ts + ts_delta if append_time is None else append_time,
                key,
                value,
                headers,
            )
        )
    if pos != total:
        raise CorruptBatchError(f"{total - pos} bytes left after {header.records_count} records")
    return records


