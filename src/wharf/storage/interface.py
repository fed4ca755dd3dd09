"""The API every log backend offers (:class:`~wharf.storage.log.Log`,
:class:`~wharf.storage.memory_log.MemoryLog`); code above storage types against this."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from wharf.storage.log import AppendInfo
from wharf.storage.record_batch import RecordInput
from wharf.storage.validated import ValidatedBatches

__all__ = ["LogLike"]


class LogLike(Protocol):
    """An append-only log of RecordBatch v2 batches (see docs/architecture.md)."""

    @property
    def log_start_offset(self) -> int: ...

    @property
    def next_offset(self) -> int: ...

    @property
    def durable_offset(self) -> int: ...

    @property
    def size_bytes(self) -> int: ...

    @property
    def closed(self) -> bool: ...

    def append(self, batches: bytes | bytearray | memoryview) -> AppendInfo: ...

    def append_validated(self, batches: ValidatedBatches) -> AppendInfo: ...

    def append_records(
        self, records: Sequence[RecordInput], *, compression: int = 0
    ) -> AppendInfo: ...

    def flush(self) -> int: ...

    def read(self, offset: int, max_bytes: int, *, max_offset: int | None = None) -> bytes: ...

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None: ...

    def delete_records_before(self, offset: int) -> None: ...

    def enforce_retention(self, now_ms: int) -> int: ...

    def segment_base_offsets(self) -> list[int]: ...

    def close(self) -> None: ...

    def delete(self) -> None: ...
