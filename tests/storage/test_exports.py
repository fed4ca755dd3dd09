"""The public names of the storage package, pinned so they do not drift unnoticed."""

from __future__ import annotations

import wharf.storage
import wharf.storage.compression
import wharf.storage.record_batch


def test_storage_package_exports() -> None:
    assert sorted(wharf.storage.__all__) == [
        "AppendInfo",
        "BatchHeader",
        "Log",
        "LogConfig",
        "LogLike",
        "MemoryLog",
        "OffsetOutOfRangeError",
        "Record",
        "RecordInput",
        "build_batch",
        "decode_records",
        "iter_batches",
    ]
    for name in wharf.storage.__all__:
        assert hasattr(wharf.storage, name), name


def test_record_batch_exports() -> None:
    assert sorted(wharf.storage.record_batch.__all__) == sorted(
        [
            "HEADER_SIZE", "MAGIC", "BatchHeader", "Record", "RecordInput", "build_batch",
            "check_header", "decode_records", "decode_varint", "encode_varint", "iter_batches",
            "parse_header", "set_base_offset", "validate_batch",
        ]
    )
    for name in wharf.storage.record_batch.__all__:
        assert hasattr(wharf.storage.record_batch, name), name


def test_compression_exports() -> None:
    assert sorted(wharf.storage.compression.__all__) == sorted(
        [
            "COMPRESSION_GZIP", "COMPRESSION_LZ4", "COMPRESSION_NONE", "COMPRESSION_SNAPPY",
            "COMPRESSION_ZSTD", "compress", "decompress",
        ]
    )
    for name in wharf.storage.compression.__all__:
        assert hasattr(wharf.storage.compression, name), name
