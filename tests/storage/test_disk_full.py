"""Disk full: a failed write raises StorageError(errno), leaves the log consistent, and the log
takes appends again once space is back. Simulated with RLIMIT_FSIZE in a child process."""

from __future__ import annotations

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest

CHILD = Path(__file__).with_name("fsize_child.py")


@pytest.mark.parametrize("limit", [50_000, 50_001, 123_457])
def test_write_failure_is_cut_back_and_the_log_recovers(tmp_path: Path, limit: int) -> None:
    done = subprocess.run(
        [sys.executable, str(CHILD), str(tmp_path / "log"), str(limit)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    report = json.loads(done.stdout)
    assert len(report["failures"]) == 3
    for failure in report["failures"]:
        assert failure["errno"] == errno.EFBIG
        assert failure["unchanged"], "a failed append moved the log's positions"
        assert failure["file_size"] == failure["log_size"], "a partial write was left behind"
        assert failure["log_size"] <= limit
    assert report["flush"]
    assert report["readable_while_full"]
    assert report["after_reopen"]
    assert report["count"] > 40
