"""docs/embedded.md's example runs and prints what the page says it prints."""

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).parents[2] / "examples" / "embedded_streams.py"


def test_embedded_streams_example_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:6] == [
        "produced order 0 for customer-0 -> partition 1 @ 0",
        "produced order 1 for customer-1 -> partition 0 @ 0",
        "produced order 2 for customer-0 -> partition 1 @ 1",
        "produced order 3 for customer-1 -> partition 0 @ 1",
        "produced order 4 for customer-0 -> partition 1 @ 2",
        "produced order 5 for customer-1 -> partition 0 @ 2",
    ]
    assert lines[6:] == [
        "read partition 0 @ 0: b'order 1'",
        "read partition 0 @ 1: b'order 3'",
        "resumed billing at offset 2: [b'order 5']",
        "long poll woke with [b'late order']",
    ]
    assert (tmp_path / "data" / "topics" / "orders-2").is_dir()
