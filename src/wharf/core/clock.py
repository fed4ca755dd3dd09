"""Time as the core sees it, so tests can replace it.

Everything in ``core`` that depends on time (TTL, delays, session timeouts, heartbeats,
retention) asks a :class:`Clock` instead of calling ``time`` directly, and schedules its timers
with :meth:`Clock.call_later`. Tests pass ``wharf.testing.clock.VirtualClock`` instead: it moves
time, and fires those timers, only when told to.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Protocol


class TimerHandle(Protocol):
    """What :meth:`Clock.call_later` returns: a timer that can be cancelled before it fires."""

    def cancel(self) -> None: ...


class Clock:
    """Wall-clock milliseconds, a monotonic reading in seconds, and timers.

    The real clock's timers are the running event loop's; a virtual clock fires them as a test
    moves time forward.
    """

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` once, ``delay_s`` seconds from now."""
        return asyncio.get_running_loop().call_later(delay_s, callback)

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic(self) -> float:
        return time.monotonic()
