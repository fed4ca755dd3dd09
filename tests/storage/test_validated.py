"""One append's batches, validated once: what the value carries, each refusal, LogAppendTime."""

from __future__ import annotations

import pytest
from kafka.record.default_records import DefaultRecordBatch as KpBatch

from wharf.errors import BatchTooLargeError, CorruptBatchError
from wharf.storage.record_batch import (
    RecordInput,
    build_batch,
    decode_records,
    iter_batches,
    validate_batch,
)
from wharf.storage.validated import validate_batches


def test_one_pass_carries_every_header_field_and_where_each_batch_starts() -> None:
    first = build_batch(
        [RecordInput(b"k", b"a", (), 1_000), RecordInput(b"k", b"b", (), 1_500)],
        producer_id=7, producer_epoch=2, base_sequence=40,
    )
    second = build_batch([RecordInput(None, b"c", (), 1_200)], compression=3)
    batches = validate_batches(first + second, 1 << 20)
    assert batches.positions == [0, len(first)]
    assert batches.size == len(first) + len(second)
    assert batches.offsets == 3 and batches.records == 3
    assert batches.max_timestamp == 1_500
    one, two = batches.headers
    assert (one.producer_id, one.producer_epoch, one.base_sequence) == (7, 2, 40)
    assert (one.last_offset_delta, one.records_count, one.max_timestamp) == (1, 2, 1_500)
    assert (two.producer_id, two.compression, two.size) == (-1, 3, len(second))
    assert one == validate_batch(first) and two == validate_batch(second)


def test_the_size_limit_is_one_error_with_one_message() -> None:
    data = build_batch([RecordInput(None, b"x" * 300)])
    with pytest.raises(BatchTooLargeError) as refused:
        validate_batches(data, 200)
    assert str(refused.value) == f"batch of {len(data)} bytes exceeds the limit of 200 bytes"
    with pytest.raises(BatchTooLargeError) as again:
        validate_batch(data, max_batch_bytes=200)
    assert str(again.value) == str(refused.value)
    assert validate_batches(data, len(data)).size == len(data)


@pytest.mark.parametrize("cut", [0, 1, 30, 61, -1])
def test_empty_short_truncated_or_trailing_input_is_corrupt(cut: int) -> None:
    data = build_batch([RecordInput(None, b"value")])
    given = data[:cut] if cut >= 0 else data + b"\x00"
    with pytest.raises(CorruptBatchError) as refused:
        validate_batches(given, 1 << 20)
    assert not isinstance(refused.value, BatchTooLargeError)


def test_a_bad_crc_is_corrupt() -> None:
    data = bytearray(build_batch([RecordInput(None, b"value")]))
    data[-1] ^= 1
    with pytest.raises(CorruptBatchError, match="CRC"):
        validate_batches(data, 1 << 20)


def test_log_append_time_stamps_every_batch_and_keeps_its_records() -> None:
    first = build_batch([RecordInput(b"k", b"a", (), 1_000), RecordInput(b"k", b"b", (), 1_005)])
    second = build_batch([RecordInput(None, b"c", (), 2_000)], compression=1)
    given = first + second
    stamped = validate_batches(given, 1 << 20).with_log_append_time(1_700_000_000_777).view
    assert bytes(given) == first + second  # the input is not changed
    for (pos, header), size in zip(iter_batches(stamped), (len(first), len(second)), strict=True):
        assert header.timestamp_type == 1
        assert header.max_timestamp == 1_700_000_000_777
        batch = bytes(stamped[pos : pos + size])
        validate_batch(batch)  # the CRC was computed anew
        assert [r.timestamp_ms for r in decode_records(batch)] == [1_700_000_000_777] * (
            2 if pos == 0 else 1
        )
        # kafka-python reads the same: LogAppendTime, the batch's timestamp for every record
        theirs = list(KpBatch(batch))
        assert {(r.timestamp_type, r.timestamp) for r in theirs} == {(1, 1_700_000_000_777)}
    assert [r.value for r in decode_records(bytes(stamped[len(first) :]))] == [b"c"]


def test_log_append_time_never_gives_a_corrupt_batch_a_valid_crc() -> None:
    corrupt = bytearray(build_batch([RecordInput(None, b"value", (), 1)]))
    corrupt[-1] ^= 0x01
    with pytest.raises(CorruptBatchError, match="CRC"):
        validate_batches(corrupt, 1 << 20).with_log_append_time(5)
