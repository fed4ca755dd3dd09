"""docs/embedded.md's examples run and print what the page says they print."""

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).parents[2] / "examples"
EXAMPLE = EXAMPLES / "embedded_streams.py"


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
    assert (tmp_path / "data" / "topics" / "orders-0").is_dir()


def test_embedded_queues_example_runs(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "embedded_queues.py"), str(tmp_path / "data")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "published 'resize image' with priority 1",
        "published 'send invoice' with priority 5",
        "published 'rebuild index' with priority 1",
        "published 'page on-call' with priority 9",
        "received b'page on-call' (priority 9)",
        "  acked",
        "received b'send invoice' (priority 5)",
        "  rejected to the dead-letter exchange",
        "left the block: 2 ready, 0 unacked",
        "dead-lettered b'send invoice': x-death reason=rejected queue=tasks count=1; team=ops",
        "received b'resize image' redelivered=True delivery_count=2",
        "  acked",
        "received b'rebuild index' redelivered=False delivery_count=1",
        "  left unsettled",
        "reopened: 1 ready in tasks",
        "got b'rebuild index' redelivered=True",
    ]
    assert (tmp_path / "data" / "queues" / "definitions.json").is_file()
