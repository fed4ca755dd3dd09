"""The summaries a clean stop leaves: saved whole, read once and deleted, ignored when
unreadable."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from wharf.core.clean_stop import save_summary, take_summary


async def test_a_saved_summary_is_read_once_and_deleted(tmp_path: Path) -> None:
    path = tmp_path / "summaries.json"
    await save_summary(path, {"a": [1, 2, 3]}, None, "every log")
    assert take_summary(path, dict[str, list[int]], "every log") == {"a": [1, 2, 3]}
    assert not path.exists()
    assert take_summary(path, dict[str, list[int]], "every log") is None


def test_an_unreadable_summary_is_logged_deleted_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "summaries.json"
    path.write_bytes(b'{"a": "not a list"}')
    with caplog.at_level(logging.WARNING):
        assert take_summary(path, dict[str, list[int]], "every log") is None
    assert "unreadable" in caplog.text and "opening every log" in caplog.text
    assert not path.exists()


async def test_a_summary_that_cannot_be_saved_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "missing-dir" / "summaries.json"
    with caplog.at_level(logging.ERROR):
        await save_summary(path, {}, None, "every log")
    assert "not saved; the next start opens every log" in caplog.text
