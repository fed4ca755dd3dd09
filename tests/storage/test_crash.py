"""Kill -9 a writer at random moments; every acknowledged (fsynced) record must survive."""

from __future__ import annotations

import hashlib
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wharf.storage.log import Log
from wharf.testing.log_conformance import records_in

WRITER = Path(__file__).with_name("crash_writer.py")
ITERATIONS = 32


def run_and_kill(directory: Path, seed: int, run_for: float, *, early: bool) -> dict[int, str]:
    """Start the writer and SIGKILL it ``run_for`` seconds after it is ready, or, if ``early``,
    that long after it starts opening (recovering) the log. Returns what it acknowledged."""
    proc = subprocess.Popen(
        [sys.executable, str(WRITER), str(directory), str(seed)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdout is not None
    acked: dict[int, str] = {}
    buffer = b""
    deadline: float | None = None
    start_deadline = time.monotonic() + 60
    trigger = b"opening\n" if early else b"ready"
    try:
        while True:
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if deadline is None and now > start_deadline:
                break
            ready, _, _ = select.select([proc.stdout], [], [], 0.001)
            if ready:
                chunk = proc.stdout.read1(65536)  # type: ignore[attr-defined]
                if not chunk:
                    break
                buffer += chunk
                if deadline is None and trigger in buffer:
                    deadline = time.monotonic() + run_for
            elif proc.poll() is not None:
                break
    finally:
        proc.send_signal(signal.SIGKILL)
        rest, err = proc.communicate(timeout=60)
    buffer += rest
    lines = buffer.split(b"\n")
    assert lines[0] == b"opening", err.decode(errors="replace")
    assert proc.returncode == -signal.SIGKILL, err.decode(errors="replace")
    if len(lines) > 2:
        assert lines[1].startswith(b"ready"), lines[1]
    for line in lines[2:-1]:  # the last piece may be a half-written line: not acknowledged
        offset, digest = line.split()
        acked[int(offset)] = digest.decode()
    return acked


@pytest.mark.slow
def test_acknowledged_records_survive_sigkill(tmp_path: Path) -> None:
    directory = tmp_path / "log"
    rng = random.Random(20261129)
    acked: dict[int, str] = {}
    for iteration in range(ITERATIONS):
        if iteration % 4 == 3:
            # killed while opening: recovery itself must be safe to interrupt
            acked.update(run_and_kill(directory, iteration, rng.uniform(0, 0.01), early=True))
        else:
            acked.update(
                run_and_kill(directory, iteration, rng.uniform(0.02, 0.35), early=False)
            )
        log = Log.open(directory)
        try:
            stored: dict[int, str] = {}
            offset = 0
            while offset < log.next_offset:
                chunk = log.read(offset, 1 << 20)
                recs = records_in(chunk)  # validates every batch's CRC and records
                assert recs, f"no records at {offset}"
                for r in recs:
                    stored[r.offset] = hashlib.sha256(r.value or b"").hexdigest()
                offset = recs[-1].offset + 1
            assert sorted(stored) == list(range(log.next_offset)), "offsets have gaps"
            missing = [o for o in acked if o not in stored]
            assert not missing, f"iteration {iteration}: acknowledged offsets lost {missing[:5]}"
            changed = [o for o, h in acked.items() if stored[o] != h]
            assert not changed, f"iteration {iteration}: acknowledged records changed {changed[:5]}"
        finally:
            log.close()
    assert len(acked) > 300, f"too few acknowledged records to mean anything ({len(acked)})"
