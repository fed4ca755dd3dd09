"""The intake object layout: what encode_object writes, decode_footer reads back, and refuses
whole when the object is truncated, has bytes after it, or carries a damaged footer."""

from __future__ import annotations

import uuid

import pytest

from wharf.cluster.streams.objects import (
    CorruptObjectError,
    PartitionRun,
    Section,
    decode_footer,
    encode_object,
    intake_key,
)
from wharf.storage.record_batch import RecordInput, build_batch
from wharf.storage.validated import validate_batches

TOPIC_A = uuid.UUID("00000000-0000-0000-0000-00000000000a")
TOPIC_B = uuid.UUID("00000000-0000-0000-0000-00000000000b")


def batch(*values: bytes) -> bytes:
    return build_batch([RecordInput(None, v) for v in values], now_ms=1_000)


def sample() -> tuple[bytes, list[list[int]], list[bytes]]:
    chunks = [batch(b"a1"), batch(b"a2", b"a3"), batch(b"b1")]
    data, starts = encode_object(
        [
            PartitionRun(TOPIC_A, 0, chunks[:2], 3),
            PartitionRun(TOPIC_B, 7, chunks[2:], 1),
        ]
    )
    return data, starts, chunks


def test_an_object_decodes_to_the_sections_it_was_encoded_from() -> None:
    data, starts, chunks = sample()
    a_length = len(chunks[0]) + len(chunks[1])
    assert decode_footer(data) == [
        Section(TOPIC_A, 0, 0, a_length, 3),
        Section(TOPIC_B, 7, a_length, len(chunks[2]), 1),
    ]
    assert starts == [[0, len(chunks[0])], [a_length]]
    for chunk, start in zip(chunks, [0, len(chunks[0]), a_length], strict=True):
        assert data[start : start + len(chunk)] == chunk
    # each section is whole batches, as the producer sent them
    sections = decode_footer(data)
    assert validate_batches(data[: sections[0].length], 1 << 20).records == 3


def test_an_empty_flush_is_a_footer_alone() -> None:
    data, starts = encode_object([])
    assert starts == []
    assert decode_footer(data) == []


@pytest.mark.parametrize("cut", [1, 5, 12, 40])
def test_a_truncated_object_is_refused(cut: int) -> None:
    data, _, _ = sample()
    with pytest.raises(CorruptObjectError):
        decode_footer(data[:-cut])


def test_a_prefix_of_an_object_is_refused() -> None:
    data, _, _ = sample()
    with pytest.raises(CorruptObjectError, match="too short|does not end"):
        decode_footer(data[:10])


@pytest.mark.parametrize("extra", [b"\x00", b"WHI1", b"x" * 100])
def test_trailing_bytes_are_refused(extra: bytes) -> None:
    data, _, _ = sample()
    with pytest.raises(CorruptObjectError):
        decode_footer(data + extra)


def test_a_damaged_footer_fails_its_crc() -> None:
    data, _, _ = sample()
    damaged = bytearray(data)
    damaged[-20] ^= 0xFF
    with pytest.raises(CorruptObjectError, match="CRC"):
        decode_footer(bytes(damaged))


def test_a_footer_that_does_not_tile_its_data_is_refused() -> None:
    data, _, _ = sample()
    with pytest.raises(CorruptObjectError, match="sections end at"):
        decode_footer(b"\x00" + data)  # one byte more data than the sections cover


def test_the_key_names_the_node_and_the_flush() -> None:
    flush_id = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert intake_key("node-a", flush_id) == f"intake/node-a/{flush_id}"
