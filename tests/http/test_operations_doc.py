"""docs/operations.md lists every HTTP endpoint the API serves, and nothing it does not."""

from __future__ import annotations

import re
from pathlib import Path

from wharf.http.app import all_endpoints

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_api_table_matches_the_served_endpoints() -> None:
    rows = set(re.findall(r"^\| `([A-Z]+)` \| `([^`]+)` \|", DOC.read_text(), re.MULTILINE))
    assert rows == {(e.method, e.path) for e in all_endpoints()}
