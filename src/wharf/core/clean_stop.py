"""What a clean stop leaves for the next start, so that it opens no log it does not need.

The topics and the queues each save, when the broker closes cleanly, a summary of what their
logs hold (:mod:`wharf.core.streams.topics`, :mod:`wharf.core.queues.registry`). The next start
reads it once and deletes it at once, with its directory fsynced, before anything changes: a
summary found later would describe logs that changed since, so only a crash's absence of one
makes a start recover every log. An unreadable summary is logged and ignored.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import Executor
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from wharf.core.durability import run_off_loop
from wharf.errors import StorageError
from wharf.storage.checkpoint import fsync_dir, replace_file

__all__ = ["save_summary", "take_summary"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


async def save_summary(path: Path, summary: Any, executor: Executor | None, what: str) -> None:
    """Write ``summary`` to ``path`` on ``executor`` (atomically, fsynced); a failure is only
    logged: the next start then opens ``what`` (a phrase: "every partition log")."""
    save = partial(replace_file, path, msgspec.json.encode(summary))
    try:
        await run_off_loop(executor, save)
    except StorageError:
        log.exception("%s not saved; the next start opens %s", path.name, what)


def take_summary(path: Path, type_: type[_T], what: str) -> _T | None:
    """The summary a clean stop saved at ``path`` (None without one, or when unreadable: the
    start then opens ``what``), deleted from the disk (blocking: run it off the loop)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    summary: _T | None
    try:
        summary = msgspec.json.decode(raw, type=type_)
    except msgspec.DecodeError as exc:
        log.warning("%s is unreadable (%s); opening %s", path, exc, what)
        summary = None
    path.unlink()
    fsync_dir(os.fspath(path.parent))
    return summary
