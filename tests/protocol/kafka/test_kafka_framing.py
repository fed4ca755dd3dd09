"""FrameDecoder: whole, byte by byte, with trailing bytes, and every kind of bad prefix."""

from __future__ import annotations

import struct
import tracemalloc

import pytest
from kio.schema.errors import ErrorCode

from wharf.protocol.kafka.errors import (
    FrameTooLargeError,
    InvalidFrameLengthError,
    KafkaProtocolError,
    TlsOnPlainPortError,
)
from wharf.protocol.kafka.framing import NEED_DATA, FrameDecoder, frame

# The first bytes of a TLS 1.2 ClientHello as an openssl s_client sends them.
TLS_CLIENT_HELLO = bytes.fromhex("160301020001000200fc03031a2b3c4d")


def drain(decoder: FrameDecoder) -> list[bytes]:
    out = []
    while (item := decoder.next_frame()) is not NEED_DATA:
        assert isinstance(item, bytes)
        out.append(item)
    return out


def test_whole_frames() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(frame(b"abc") + frame(b"defgh"))
    assert drain(decoder) == [b"abc", b"defgh"]
    assert decoder.buffered == 0


def test_byte_by_byte() -> None:
    data = frame(b"hello") + frame(b"x" * 300)
    decoder = FrameDecoder()
    got: list[bytes] = []
    for i in range(len(data)):
        decoder.receive_data(data[i : i + 1])
        got.extend(drain(decoder))
    assert got == [b"hello", b"x" * 300]


def test_trailing_partial_frame_is_kept() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(frame(b"one") + frame(b"two")[:5])
    assert drain(decoder) == [b"one"]
    assert decoder.buffered == 5
    decoder.receive_data(frame(b"two")[5:])
    assert drain(decoder) == [b"two"]


@pytest.mark.parametrize("size", [0, -1, -(2**31)])
def test_non_positive_length(size: int) -> None:
    decoder = FrameDecoder()
    decoder.receive_data(struct.pack(">i", size) + b"rest")
    with pytest.raises(InvalidFrameLengthError) as info:
        decoder.next_frame()
    assert info.value.code == ErrorCode.invalid_request


def test_oversized_length_is_refused_before_the_body_arrives() -> None:
    decoder = FrameDecoder(max_frame_bytes=1024)
    decoder.receive_data(struct.pack(">i", 1025))
    with pytest.raises(FrameTooLargeError):
        decoder.next_frame()


def test_length_at_the_limit_is_accepted() -> None:
    decoder = FrameDecoder(max_frame_bytes=16)
    decoder.receive_data(frame(b"y" * 16))
    assert drain(decoder) == [b"y" * 16]


def test_tls_client_hello_on_plain_port() -> None:
    decoder = FrameDecoder()
    decoder.receive_data(TLS_CLIENT_HELLO)
    with pytest.raises(TlsOnPlainPortError) as info:
        decoder.next_frame()
    assert isinstance(info.value, KafkaProtocolError)
    assert "TLS" in str(info.value)


def test_large_frame_across_many_reads_then_the_next_frame() -> None:
    big = bytes(range(256)) * 4000  # about a megabyte, like a produce request
    data = frame(big) + frame(b"after") + frame(b"tail")[:6]
    decoder = FrameDecoder()
    got: list[bytes] = []
    for i in range(0, len(data), 65536):
        decoder.receive_data(data[i : i + 65536])
        got.extend(drain(decoder))
    assert got == [big, b"after"]
    assert decoder.buffered == 6
    decoder.receive_data(frame(b"tail")[6:])
    assert drain(decoder) == [b"tail"]
    assert decoder.buffered == 0


def test_size_prefix_split_over_reads() -> None:
    data = frame(b"abcdef") * 3
    decoder = FrameDecoder()
    got: list[bytes] = []
    for piece in (data[:2], data[2:3], data[3:12], data[12:]):
        decoder.receive_data(piece)
        got.extend(drain(decoder))
    assert got == [b"abcdef"] * 3


def test_a_mutable_buffer_is_copied_on_receipt() -> None:
    data = bytearray(frame(b"keep"))
    decoder = FrameDecoder()
    decoder.receive_data(data)
    data[4:8] = b"XXXX"
    assert drain(decoder) == [b"keep"]


def test_trickled_bytes_do_not_cost_an_object_per_read() -> None:
    data = frame(b"z" * 300_000)
    decoder = FrameDecoder()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i in range(0, 200_000, 2):
            decoder.receive_data(data[i : i + 2])
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert decoder.next_frame() is NEED_DATA
    assert held < 1_000_000  # 200 KB of data; an object per 2-byte read would be over 4 MB
    decoder.receive_data(data[200_000:])
    assert drain(decoder) == [b"z" * 300_000]
