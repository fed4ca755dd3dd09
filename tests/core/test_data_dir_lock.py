"""The data-directory lock every broker takes (embedded or served): the holder's pid in
``wharf.pid``, a second holder refused naming it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from wharf.core.data_dir_lock import PID_FILE_NAME, DataDirInUseError, DataDirLock


def test_lock_writes_the_pid_and_clears_it_on_release(tmp_path: Path) -> None:
    data_dir = tmp_path / "new" / "data"
    with DataDirLock(data_dir) as lock:
        assert lock.held
        assert (data_dir / PID_FILE_NAME).read_text() == f"{os.getpid()}\n"
    assert not lock.held
    assert (data_dir / PID_FILE_NAME).read_text() == ""


def test_second_holder_is_refused_with_the_owner_pid(tmp_path: Path) -> None:
    with DataDirLock(tmp_path):
        with pytest.raises(DataDirInUseError) as info:
            DataDirLock(tmp_path).acquire()
    assert info.value.pid == os.getpid()
    assert f"(pid {os.getpid()})" in str(info.value)
    DataDirLock(tmp_path).acquire()  # free again once the first is released


def test_lock_held_by_another_process_names_it(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, pathlib\n"
            "from wharf.core.data_dir_lock import DataDirLock\n"
            "lock = DataDirLock(pathlib.Path(sys.argv[1])); lock.acquire()\n"
            "print('locked', flush=True); sys.stdin.read()\n",
            str(tmp_path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(DataDirInUseError) as info:
            DataDirLock(tmp_path).acquire()
        assert info.value.pid == holder.pid
    finally:
        holder.kill()
        holder.wait()
        assert holder.stdin is not None and holder.stdout is not None
        holder.stdin.close()
        holder.stdout.close()
    # A killed owner leaves its pid behind, but not its lock.
    assert (tmp_path / PID_FILE_NAME).read_text() == f"{holder.pid}\n"
    with DataDirLock(tmp_path):
        assert (tmp_path / PID_FILE_NAME).read_text() == f"{os.getpid()}\n"


def test_unreadable_pid_is_reported_as_unknown(tmp_path: Path) -> None:
    with DataDirLock(tmp_path):
        (tmp_path / PID_FILE_NAME).write_text("garbage")
        with pytest.raises(DataDirInUseError, match="pid is not recorded"):
            DataDirLock(tmp_path).acquire()
