"""Holding every ``Log.open`` of a test on a gate: to act while a log is being opened."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from wharf.storage.log import Log


def gate_log_opens(
    monkeypatch: pytest.MonkeyPatch, under: str | None = None
) -> tuple[threading.Event, threading.Event]:
    """``(started, gate)``: ``started`` is set when a ``Log.open`` begins (on whatever thread),
    which then waits until the test sets ``gate`` (at most 30 s). ``under``: only the opens
    of logs whose path holds it are held."""
    started, gate = threading.Event(), threading.Event()
    real_open = Log.open

    def gated_open(cls: type[Log], *args: Any, **kwargs: Any) -> Log:
        if under is not None and under not in str(args[0]):
            return real_open(*args, **kwargs)
        started.set()
        assert gate.wait(30)
        return real_open(*args, **kwargs)

    monkeypatch.setattr(Log, "open", classmethod(gated_open))
    return started, gate


def watch_log_opens(monkeypatch: pytest.MonkeyPatch, hold_s: float = 0.05) -> list[str]:
    """The paths of ``Log.open`` calls that began while another open of the same path ran
    (filled as it happens; each open is held ``hold_s`` seconds, long enough for another
    thread to come in meanwhile)."""
    opening: list[str] = []
    overlapped: list[str] = []
    real_open = Log.open

    def watched_open(cls: type[Log], *args: Any, **kwargs: Any) -> Log:
        path = str(args[0])
        if path in opening:
            overlapped.append(path)
        opening.append(path)
        try:
            time.sleep(hold_s)
            return real_open(*args, **kwargs)
        finally:
            opening.remove(path)

    monkeypatch.setattr(Log, "open", classmethod(watched_open))
    return overlapped
