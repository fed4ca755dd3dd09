"""The cluster's drivers stay an optional extra: single-node mode never imports them."""

from __future__ import annotations

import subprocess
import sys


def test_broker_and_serve_import_no_cluster_driver() -> None:
    code = (
        "import sys, wharf.core.broker, wharf.cli.serve.command\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'psycopg_pool',"
        " 'obstore')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
