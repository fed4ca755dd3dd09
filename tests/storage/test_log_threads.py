"""flush() from a committer thread while the owner thread appends, rolls and deletes."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

from wharf.storage.log import Log, LogConfig
from wharf.storage.record_batch import RecordInput
from wharf.testing.log_conformance import records_in


def test_concurrent_flush_with_appends_rolls_and_retention(tmp_path: Path) -> None:
    log = Log.open(
        tmp_path / "log",
        # the flushes also move the recovery point (and write the active segment's index
        # files) every 1 KiB, racing with the owner's rolls
        LogConfig(segment_bytes=8192, index_interval_bytes=512, retention_bytes=64 * 1024,
                  retention_ms=None, recovery_point_interval_bytes=1024),
    )
    stop = threading.Event()
    seen: list[int] = []
    errors: list[BaseException] = []

    def committer() -> None:
        try:
            while not stop.is_set():
                seen.append(log.flush())
        except BaseException as exc:  # reported to the main thread below
            errors.append(exc)

    thread = threading.Thread(target=committer)
    thread.start()
    try:
        for i in range(3000):
            log.append_records([RecordInput(None, b"%06d" % i + b"x" * (i % 90))])
            if i % 200 == 0:
                log.enforce_retention(0)
            if i == 1500:
                log.delete_records_before(log.next_offset - 100)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not thread.is_alive()
    assert not errors, errors
    assert seen == sorted(seen), "durable offset went backwards"
    assert log.flush() == 3000 == log.durable_offset
    assert log.recovery_point > 2000
    snapshot = tmp_path / "snap"
    shutil.copytree(log.path, snapshot)  # what a crash right now would leave
    start = log.log_start_offset
    log.close()
    reopened = Log.open(snapshot)
    try:
        assert reopened.next_offset == 3000
        assert reopened.log_start_offset == start
        values = [r.value for r in records_in(reopened.read(start, 1 << 30)) if r.offset >= start]
        assert [int((v or b"")[:6]) for v in values] == list(range(start, 3000))
    finally:
        reopened.close()
