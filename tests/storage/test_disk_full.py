"""Disk full: a failed write raises StorageError(errno), leaves the log consistent, and the log
takes appends again once space is back. Simulated in a child process with RLIMIT_FSIZE (EFBIG)
and, where mount namespaces are available, with a real full tmpfs (ENOSPC)."""

from __future__ import annotations

import errno
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

CHILD = Path(__file__).with_name("disk_full_child.py")


def check_report(report: dict[str, Any], expected_errno: int, limit: int) -> None:
    assert len(report["failures"]) == 3
    for failure in report["failures"]:
        assert failure["errno"] == expected_errno
        assert failure["unchanged"], "a failed append moved the log's positions"
        assert failure["file_size"] == failure["log_size"], "partial or orphan data left behind"
        assert failure["log_size"] <= limit
    assert report["flush"]
    assert report["readable_while_full"]
    assert report["after_reopen"]
    assert report["count"] > 40


@pytest.mark.parametrize("limit", [50_000, 50_001, 123_457])
def test_file_size_limit(tmp_path: Path, limit: int) -> None:
    done = subprocess.run(
        [sys.executable, str(CHILD), "fsize", str(tmp_path / "log"), str(limit)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    check_report(json.loads(done.stdout), errno.EFBIG, limit)


def test_full_filesystem(tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    if unshare is None:
        pytest.skip("needs unshare(1) to mount a private tmpfs")
    mount = tmp_path / "small"
    mount.mkdir()
    script = (
        'set -e; mount -t tmpfs -o size=256k tmpfs "$1"; '
        'head -c 65536 /dev/zero > "$1/filler"; '
        'exec "$2" "$3" enospc "$1/log" "$1/filler"'
    )
    done = subprocess.run(
        [unshare, "--mount", "--map-root-user", "sh", "-c", script, "sh", str(mount),
         sys.executable, str(CHILD)],
        capture_output=True,
        timeout=120,
        check=False,
    )
    setup_failed = done.stderr.startswith((b"unshare:", b"mount:", b"sh:"))
    if done.returncode != 0 and setup_failed and b"Traceback" not in done.stderr:
        pytest.skip(f"cannot mount a private tmpfs here: {done.stderr.decode().strip()}")
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    report = json.loads(done.stdout)
    check_report(report, errno.ENOSPC, 256 * 1024)
    assert report["segments"] > 3, "the test should roll segments while the disk is full"
