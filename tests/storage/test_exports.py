"""The public names of the storage package, pinned so they do not drift unnoticed."""

from __future__ import annotations

import wharf.storage
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
            "COMPRESSION_GZIP", "COMPRESSION_LZ4", "COMPRESSION_NONE", "COMPRESSION_SNAPPY",
            "COMPRESSION_ZSTD", "HEADER_SIZE", "MAGIC", "BatchHeader", "Record", "RecordInput",
            "build_batch", "check_header", "compress", "decode_records", "decode_varint",
            "decompress", "encode_varint", "iter_batches", "parse_header", "set_base_offset",
            "validate_batch", "validate_batches", "with_log_append_time",
        ]
    )
    for name in wharf.storage.record_batch.__all__:
        assert hasattr(wharf.storage.record_batch, name), name
