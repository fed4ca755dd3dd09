"""The append side of a disk log: validated batches in, offsets out, and the roll reported."""

from __future__ import annotations

from pathlib import Path

import pytest

from wharf.errors import BatchTooLargeError, CorruptBatchError, StorageError
from wharf.storage.log import Log, LogConfig
from wharf.storage.memory_log import MemoryLog
from wharf.storage.record_batch import RecordInput, build_batch, iter_batches
from wharf.storage.validated import validate_batches
from wharf.testing.log_conformance import records_in

ROLLING = LogConfig(segment_bytes=300, retention_ms=None)


def one(value: bytes) -> bytes:
    return build_batch([RecordInput(None, value)], now_ms=1_000)


@pytest.mark.parametrize("kind", ["disk", "memory"])
@pytest.mark.parametrize("validated", [False, True])
def test_append_says_when_it_rolled_to_a_new_segment(
    tmp_path: Path, kind: str, validated: bool
) -> None:
    log = Log.open(tmp_path / "log", ROLLING) if kind == "disk" else MemoryLog(ROLLING)
    rolls = []
    for i in range(12):
        data = one(b"%02d" % i * 40)
        info = (
            log.append_validated(validate_batches(data, ROLLING.max_batch_bytes))
            if validated
            else log.append(data)
        )
        rolls.append(info.rolled)
        if info.rolled:
            assert info.base_offset == log.segment_base_offsets()[-1] == info.last_offset
        assert info.rolled == (info.base_offset in log.segment_base_offsets()[1:])
    assert rolls[0] is False
    assert sum(rolls) == len(log.segment_base_offsets()) - 1 >= 3
    log.close()


def test_append_validated_writes_several_batches_with_the_log_offsets(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "log", LogConfig(retention_ms=None))
    log.append(one(b"first"))
    batches = [
        build_batch([RecordInput(b"k", b"a"), RecordInput(b"k", b"b")], base_offset=77),
        one(b"c"),
    ]
    info = log.append_validated(validate_batches(b"".join(batches), 1 << 20))
    assert (info.base_offset, info.last_offset, info.size) == (1, 3, sum(map(len, batches)))
    data = log.read(1, 1 << 20)
    assert [h.base_offset for _, h in iter_batches(data)] == [1, 3]
    assert [r.value for r in records_in(data)] == [b"a", b"b", b"c"]
    log.close()


def test_append_refuses_what_validation_refuses_and_writes_nothing(tmp_path: Path) -> None:
    log = Log.open(tmp_path / "log", LogConfig(retention_ms=None, max_batch_bytes=200))
    with pytest.raises(BatchTooLargeError, match="exceeds the limit of 200 bytes"):
        log.append(one(b"x" * 300))
    with pytest.raises(CorruptBatchError, match="empty append"):
        log.append(b"")
    assert (log.next_offset, log.size_bytes) == (0, 0)
    log.close()
    with pytest.raises(StorageError, match="closed"):
        log.append_validated(validate_batches(one(b"late"), 200))
