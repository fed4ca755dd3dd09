"""The records-section codecs, checked against what Kafka client libraries write and read."""

from __future__ import annotations

import pytest
from aiokafka.codec import snappy_encode as aiokafka_snappy_encode
from kafka import codec as kafka_codec

from wharf.errors import CorruptBatchError
from wharf.storage.compression import (
    COMPRESSION_GZIP,
    COMPRESSION_LZ4,
    COMPRESSION_SNAPPY,
    COMPRESSION_ZSTD,
    compress,
    decompress,
)

CODECS = [COMPRESSION_GZIP, COMPRESSION_SNAPPY, COMPRESSION_LZ4, COMPRESSION_ZSTD]
SECTION = b"".join(b"record %05d with some repeated text; " % i for i in range(3000))


@pytest.mark.parametrize("codec", CODECS)
def test_round_trip(codec: int) -> None:
    packed = compress(codec, SECTION)
    assert len(packed) < len(SECTION) // 4
    assert decompress(codec, packed, len(SECTION)) == SECTION
    assert decompress(codec, memoryview(packed), len(SECTION)) == SECTION


def test_snappy_is_xerial_framed_as_the_java_client_writes_it() -> None:
    packed = compress(COMPRESSION_SNAPPY, SECTION)
    assert kafka_codec.snappy_decode(packed) == SECTION


@pytest.mark.parametrize("xerial", [True, False])
def test_snappy_from_clients_is_read_framed_or_raw(xerial: bool) -> None:
    packed = aiokafka_snappy_encode(SECTION, xerial_compatible=xerial)
    assert decompress(COMPRESSION_SNAPPY, packed, len(SECTION)) == SECTION


@pytest.mark.parametrize("codec", CODECS)
def test_output_above_the_limit_is_refused(codec: int) -> None:
    packed = compress(codec, SECTION)
    with pytest.raises(CorruptBatchError):
        decompress(codec, packed, len(SECTION) - 1)


@pytest.mark.parametrize("codec", CODECS)
def test_garbage_is_corrupt(codec: int) -> None:
    packed = bytearray(compress(codec, SECTION))
    for i in range(4, len(packed), 7):
        packed[i] ^= 0x5A
    with pytest.raises(CorruptBatchError):
        decompress(codec, bytes(packed), 1 << 20)


def test_unknown_codecs() -> None:
    with pytest.raises(ValueError, match="unknown compression codec 5"):
        compress(5, SECTION)
    with pytest.raises(CorruptBatchError, match="unknown compression codec 5"):
        decompress(5, SECTION, 1 << 20)
