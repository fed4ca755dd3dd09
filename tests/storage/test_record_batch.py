"""RecordBatch v2 codec: real bytes from real Kafka client libraries, both directions."""

from __future__ import annotations

import struct

import crc32c
import pytest
from aiokafka.codec import snappy_encode as aiokafka_snappy_encode
from aiokafka.record.default_records import DefaultRecordBatch as AioBatch
from aiokafka.record.default_records import DefaultRecordBatchBuilder as AioBuilder
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.record.default_records import DefaultRecordBatch as KpBatch
from kafka.record.default_records import DefaultRecordBatchBuilder as KpBuilder

from wharf.errors import CorruptBatchError
from wharf.storage.record_batch import (
    HEADER_SIZE,
    RecordInput,
    build_batch,
    decode_records,
    decode_varint,
    encode_varint,
    iter_batches,
    parse_header,
    set_base_offset,
    validate_batch,
)

CODECS = [0, 1, 2, 3, 4]
RECORDS = [
    (b"key-1", b"value-1", [("h1", b"a"), ("h2", None)], 1_700_000_000_000),
    (None, b"no key", [], 1_700_000_000_005),
    (b"no value", None, [("only", b"")], 1_699_999_999_990),
    (b"", b"", [], 1_700_000_000_001),
    (b"compressible", b"abc" * 300, [("h", b"x" * 50)], 1_700_000_000_002),
]


def kafka_python_batch(codec: int, *, base_offset: int = 0, transactional: bool = False) -> bytes:
    builder = KpBuilder(
        magic=2, compression_type=codec, is_transactional=transactional,
        producer_id=42 if transactional else -1, producer_epoch=3 if transactional else -1,
        base_sequence=7 if transactional else -1, batch_size=1 << 20,
    )
    for i, (key, value, headers, ts) in enumerate(RECORDS):
        builder.append(i, timestamp=ts, key=key, value=value, headers=headers)
    data = bytes(builder.build())
    buf = bytearray(data)
    set_base_offset(buf, 0, base_offset)
    return bytes(buf)


def aiokafka_batch(codec: int) -> bytes:
    builder = AioBuilder(2, codec, 0, -1, -1, -1, 1 << 20)
    for i, (key, value, headers, ts) in enumerate(RECORDS):
        builder.append(i, timestamp=ts, key=key, value=value, headers=headers)
    return bytes(builder.build())


def recrc(buf: bytearray) -> bytes:
    """Recompute the CRC of a batch edited on purpose (to reach the record parser)."""
    struct.pack_into(">I", buf, 17, crc32c.crc32c(bytes(buf[21:])))
    return bytes(buf)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("producer", [kafka_python_batch, aiokafka_batch])
def test_decodes_batches_built_by_kafka_clients(codec: int, producer: object) -> None:
    data = producer(codec)  # type: ignore[operator]
    header = validate_batch(data)
    assert header.compression == codec
    assert header.records_count == len(RECORDS)
    assert header.last_offset_delta == len(RECORDS) - 1
    assert header.size == len(data)
    assert header.max_timestamp == max(r[3] for r in RECORDS)
    records = decode_records(data)
    assert [r.offset for r in records] == list(range(len(RECORDS)))
    assert [(r.key, r.value, list(r.headers), r.timestamp_ms) for r in records] == [
        (k, v, h, ts) for k, v, h, ts in RECORDS
    ]


def test_header_fields_match_the_client_library() -> None:
    data = kafka_python_batch(1, base_offset=1234, transactional=True)
    ours = parse_header(data)
    theirs = KpBatch(data)
    assert ours.base_offset == theirs.base_offset == 1234
    assert ours.crc == theirs.crc
    assert ours.attributes == theirs.attributes
    assert ours.last_offset == 1234 + len(RECORDS) - 1
    assert ours.base_timestamp == theirs.first_timestamp
    assert ours.max_timestamp == theirs.max_timestamp
    assert (ours.producer_id, ours.producer_epoch, ours.base_sequence) == (42, 3, 7)
    assert ours.is_transactional and not ours.is_control
    assert ours.timestamp_type == 0
    assert ours.magic == 2 and ours.records_count == len(RECORDS)


@pytest.mark.parametrize("codec", CODECS)
def test_our_batches_are_readable_by_kafka_clients(codec: int) -> None:
    inputs = [RecordInput(k, v, h, ts) for k, v, h, ts in RECORDS]
    data = build_batch(inputs, base_offset=100, compression=codec)
    for batch_cls in (KpBatch, AioBatch):
        batch = batch_cls(data)
        assert batch.validate_crc()
        assert batch.base_offset == 100
        assert batch.compression_type == codec
        got = [(r.offset, r.key, r.value, list(r.headers), r.timestamp) for r in batch]
        assert got == [(100 + i, k, v, h, ts) for i, (k, v, h, ts) in enumerate(RECORDS)]


def test_raw_snappy_without_xerial_framing_is_decoded() -> None:
    section = bytearray()
    plain = build_batch([RecordInput(k, v, h, ts) for k, v, h, ts in RECORDS])
    section = plain[HEADER_SIZE:]
    raw = aiokafka_snappy_encode(section, xerial_compatible=False)
    buf = bytearray(plain[:HEADER_SIZE] + raw)
    struct.pack_into(">i", buf, 8, len(buf) - 12)
    struct.pack_into(">h", buf, 21, 2)
    data = recrc(buf)
    assert [r.value for r in decode_records(data)] == [r[1] for r in RECORDS]


def test_set_base_offset_keeps_the_crc_valid() -> None:
    buf = bytearray(build_batch([RecordInput(b"k", b"v")]))
    set_base_offset(buf, 0, 2**40)
    header = validate_batch(buf)
    assert header.base_offset == 2**40
    assert decode_records(buf)[0].offset == 2**40


def test_log_append_time_gives_every_record_the_max_timestamp() -> None:
    buf = bytearray(build_batch([RecordInput(b"a", b"1", (), 5), RecordInput(b"b", b"2", (), 9)]))
    struct.pack_into(">h", buf, 21, 0x08)
    struct.pack_into(">q", buf, 35, 77)
    data = recrc(buf)
    assert parse_header(data).timestamp_type == 1
    assert [r.timestamp_ms for r in decode_records(data)] == [77, 77]


# ------------------------------------------------------------------ splitting and framing


def three_batches() -> tuple[bytes, list[int]]:
    batches = [
        build_batch([RecordInput(b"k%d" % i, b"v" * (i * 50))] * (i + 1)) for i in range(3)
    ]
    return b"".join(batches), [len(b) for b in batches]


def test_iter_batches_whole() -> None:
    data, sizes = three_batches()
    found = list(iter_batches(data))
    assert [pos for pos, _ in found] == [0, sizes[0], sizes[0] + sizes[1]]
    assert [h.size for _, h in found] == sizes


def test_iter_batches_every_prefix_yields_only_complete_batches() -> None:
    data, sizes = three_batches()
    ends = [sum(sizes[: i + 1]) for i in range(3)]
    for cut in range(len(data) + 1):
        found = list(iter_batches(data[:cut]))
        assert len(found) == sum(1 for end in ends if end <= cut), cut


def test_iter_batches_byte_by_byte() -> None:
    data, sizes = three_batches()
    buffer = bytearray()
    seen: list[bytes] = []
    for i in range(len(data)):
        buffer += data[i : i + 1]
        for pos, header in list(iter_batches(buffer)):
            seen.append(bytes(buffer[pos : pos + header.size]))
            del buffer[: pos + header.size]
            break
    assert b"".join(seen) == data
    assert [len(s) for s in seen] == sizes
    assert not buffer


def test_iter_batches_with_trailing_bytes() -> None:
    data, sizes = three_batches()
    # a partial next batch is not yielded
    found = list(iter_batches(data + data[:30]))
    assert len(found) == 3
    # trailing garbage announcing an impossible length is an error, not "need more"
    with pytest.raises(CorruptBatchError):
        list(iter_batches(data + b"\x00" * 8 + b"\x00\x00\x00\x05" + b"\x00" * 60))


def test_validate_batch_refuses_each_kind_of_damage() -> None:
    good = build_batch([RecordInput(b"k", b"v" * 100)])
    validate_batch(good)

    def mutate(pos: int, fmt: str, value: int) -> bytes:
        buf = bytearray(good)
        struct.pack_into(fmt, buf, pos, value)
        return bytes(buf)

    cases = {
        "crc": mutate(HEADER_SIZE + 3, ">B", good[HEADER_SIZE + 3] ^ 1),
        "magic": mutate(16, ">b", 1),
        "short length": mutate(8, ">i", 10),
        "negative length": mutate(8, ">i", -1),
        "length past buffer": mutate(8, ">i", len(good)),
        "negative delta": recrc(bytearray(mutate(23, ">i", -1))),
        "truncated": good[:-1],
        "header only partly": good[:30],
    }
    for name, bad in cases.items():
        with pytest.raises(CorruptBatchError):
            validate_batch(bad)
            pytest.fail(name)
    with pytest.raises(CorruptBatchError):
        validate_batch(good, max_batch_bytes=len(good) - 1)


def test_huge_announced_length_is_refused_without_allocating() -> None:
    buf = bytearray(build_batch([RecordInput(b"k", b"v")]))
    struct.pack_into(">i", buf, 8, 2**31 - 1)
    with pytest.raises(CorruptBatchError, match="exceeds the limit"):
        validate_batch(buf)
    with pytest.raises(CorruptBatchError):
        list(iter_batches(buf))


# ------------------------------------------------------------------ record-level damage


def test_record_level_corruption_is_detected_even_with_a_valid_crc() -> None:
    good = bytearray(build_batch([RecordInput(b"key", b"value"), RecordInput(b"k2", b"v2")]))
    # record count larger than the records present
    buf = bytearray(good)
    struct.pack_into(">i", buf, 57, 3)
    with pytest.raises(CorruptBatchError):
        decode_records(recrc(buf))
    # record count smaller: bytes left over
    buf = bytearray(good)
    struct.pack_into(">i", buf, 57, 1)
    with pytest.raises(CorruptBatchError, match="left after"):
        decode_records(recrc(buf))
    # first record's length varint claims more than the batch holds
    buf = bytearray(good)
    buf[HEADER_SIZE] = 0x7E  # zigzag 63
    with pytest.raises(CorruptBatchError):
        decode_records(recrc(buf))
    # a never-ending varint
    buf = bytearray(good[:HEADER_SIZE]) + b"\xff" * 12
    struct.pack_into(">i", buf, 8, len(buf) - 12)
    with pytest.raises(CorruptBatchError):
        decode_records(recrc(buf))


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_decompression_is_bounded(codec: int) -> None:
    data = build_batch([RecordInput(None, b"\0" * 200_000)], compression=codec)
    assert len(data) < 20_000
    with pytest.raises(CorruptBatchError):
        decode_records(data, max_uncompressed_bytes=100_000)
    assert decode_records(data)[0].value == b"\0" * 200_000


@pytest.mark.parametrize("codec", [1, 2, 3, 4])
def test_garbage_compressed_section_is_an_error(codec: int) -> None:
    buf = bytearray(build_batch([RecordInput(None, b"x" * 1000)], compression=codec))
    for i in range(HEADER_SIZE + 4, len(buf), 7):
        buf[i] ^= 0x5A
    with pytest.raises(CorruptBatchError):
        decode_records(recrc(buf))


# ------------------------------------------------------------------ varints


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"), (-1, b"\x01"), (1, b"\x02"), (-2, b"\x03"), (63, b"\x7e"),
        (-64, b"\x7f"), (64, b"\x80\x01"), (2**31 - 1, b"\xfe\xff\xff\xff\x0f"),
        (-(2**31), b"\xff\xff\xff\xff\x0f"),
        (-(2**63), b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
    ],
)
def test_zigzag_varints_follow_the_spec(value: int, encoded: bytes) -> None:
    out = bytearray()
    encode_varint(value, out)
    assert bytes(out) == encoded
    assert decode_varint(encoded) == (value, len(encoded))


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_varint_round_trip(value: int) -> None:
    out = bytearray()
    encode_varint(value, out)
    assert decode_varint(bytes(out) + b"\x00") == (value, len(out))


# ------------------------------------------------------------------ hypothesis round trips

record_inputs = st.builds(
    RecordInput,
    key=st.none() | st.binary(max_size=40),
    value=st.none() | st.binary(max_size=300),
    headers=st.lists(st.tuples(st.text(max_size=10), st.none() | st.binary(max_size=20)),
                     max_size=3),
    timestamp_ms=st.integers(min_value=0, max_value=2**45),
)


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(record_inputs, min_size=1, max_size=12),
    codec=st.sampled_from(CODECS),
    base=st.integers(min_value=0, max_value=2**62),
)
def test_build_then_decode_round_trip(records: list[RecordInput], codec: int, base: int) -> None:
    data = build_batch(records, base_offset=base, compression=codec)
    header = validate_batch(data)
    assert header.records_count == len(records)
    assert header.max_timestamp == max(r.timestamp_ms or 0 for r in records)
    decoded = decode_records(data)
    assert [(d.offset, d.key, d.value, d.headers, d.timestamp_ms) for d in decoded] == [
        (base + i, r.key, r.value, tuple(r.headers), r.timestamp_ms)
        for i, r in enumerate(records)
    ]
    theirs = [(r.key, r.value, list(r.headers)) for r in KpBatch(data)]
    assert theirs == [(r.key, r.value, list(r.headers)) for r in records]
