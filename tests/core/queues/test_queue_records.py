"""Message records encoded many to a batch: byte-identical to the generic encoder, round trip."""

from __future__ import annotations

import struct

import crc32c
import pytest

from wharf.core.queues.message import Message
from wharf.core.queues.records import BatchBuilder, decode_messages
from wharf.errors import CorruptBatchError
from wharf.storage.record_batch import RecordInput, build_batch, validate_batch

_U64 = 8


def _generic(
    items: list[tuple[int, Message, int | None, int, bool]],
) -> bytes:
    records = []
    for seq, message, expires_at, now, keep in items:
        headers: list[tuple[str, bytes | None]] = [
            ("e", message.exchange.encode()),
            ("k", message.routing_key.encode()),
            ("p", message.properties),
        ]
        if expires_at is not None:
            headers.append(("x", expires_at.to_bytes(_U64, "big")))
        if not keep:
            headers.append(("t", b""))
        records.append(RecordInput(seq.to_bytes(_U64, "big"), message.body, headers, now))
    return build_batch(records)


CASES = [
    (7, Message.build("", "q", b"hello", persistent=True), None, 1_000, True),
    (8, Message.build("ex", "a.b", b"", content_type="text/plain"), 5_000, 1_000, False),
    # multi-byte varints: a large body, a long key, a timestamp delta above 63
    (9, Message.build("ex", "k" * 300, bytes(range(256)) * 80, priority=3), None, 1_200, True),
    (2**40, Message.build("é", "ü", b"\x00" * 70, headers={"h": 1}), 2**33, 900_000, True),
]


def test_batch_is_byte_identical_to_the_generic_encoder() -> None:
    builder = BatchBuilder()
    for seq, message, expires_at, now, keep in CASES:
        builder.add(seq, message, expires_at, now, keep)
    assert bytes(builder.finish()) == _generic(CASES)


@pytest.mark.parametrize("count", [1, 2, 500])
def test_round_trip_keeps_order_and_every_field(count: int) -> None:
    builder = BatchBuilder()
    items = [CASES[i % len(CASES)] for i in range(count)]
    for i, (_, message, expires_at, now, keep) in enumerate(items):
        builder.add(1000 + i, message, expires_at, now + i, keep)
    batch = bytes(builder.finish())
    header = validate_batch(batch, max_batch_bytes=len(batch))
    assert header.records_count == count and header.last_offset_delta == count - 1
    decoded = decode_messages(batch)
    assert [d.offset for d in decoded] == list(range(count))
    for i, (d, (_, message, expires_at, _, keep)) in enumerate(zip(decoded, items, strict=True)):
        assert d.seq == 1000 + i
        assert d.expires_at == expires_at
        assert d.transient is not keep
        assert d.message.exchange == message.exchange
        assert d.message.routing_key == message.routing_key
        assert d.message.properties == message.properties
        assert d.message.body == message.body


def test_builder_is_empty_after_finish_and_restore_gives_the_batch_back() -> None:
    builder = BatchBuilder()
    builder.add(1, CASES[0][1], None, 5, True)
    batch = builder.finish()
    assert builder.count == 0
    builder.restore(batch, 1)
    with pytest.raises(ValueError):
        builder.restore(batch, 1)
    builder.add(2, CASES[0][1], None, 6, True)
    assert [d.seq for d in decode_messages(bytes(builder.finish()))] == [1, 2]


def test_damaged_records_raise_corrupt_batch_error_only() -> None:
    builder = BatchBuilder()
    for seq, message, expires_at, now, keep in CASES[:2]:
        builder.add(seq, message, expires_at, now, keep)
    batch = builder.finish()
    for cut in range(len(batch)):  # every truncation
        with pytest.raises(CorruptBatchError):
            decode_messages(bytes(batch[:cut]))
    for pos in range(61, len(batch)):  # every byte of the records, CRC made valid again
        for value in (0x00, 0x7F, 0xFF):
            damaged = bytearray(batch)
            damaged[pos] = value
            struct.pack_into(">I", damaged, 17, crc32c.crc32c(bytes(damaged[21:])))
            try:
                decoded = decode_messages(bytes(damaged))
            except CorruptBatchError:
                continue
            assert len(decoded) == 2  # a change that still parses: same number of records
