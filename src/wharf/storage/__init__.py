"""Storage: segmented append-only logs of Kafka RecordBatch v2, with indexes and recovery.

Synchronous and socket-free. See docs/architecture.md ("Storage") for the on-disk layout.
"""

from wharf.errors import OffsetOutOfRangeError
from wharf.storage.interface import LogLike
from wharf.storage.log import AppendInfo, Log, LogConfig
from wharf.storage.memory_log import MemoryLog
from wharf.storage.record_batch import (
    BatchHeader,
    Record,
    RecordInput,
    build_batch,
    decode_records,
    iter_batches,
)

__all__ = [
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
