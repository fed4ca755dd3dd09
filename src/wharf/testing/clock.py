"""The virtual clock: time that moves only when a test moves it, timers included.

How it works. :class:`VirtualClock` counts elapsed virtual time in integer nanoseconds (so
repeated small steps never drift) on top of a fixed wall-clock start. The wall-clock reading can
also be stepped alone, either way (:meth:`VirtualClock.step_wall_clock`), as an NTP correction
steps a real one; monotonic time and timers never go back. ``call_later`` puts a timer
on a heap ordered by due time, then by scheduling order. :meth:`VirtualClock.advance` walks the
heap up to the new time: each timer fires with the clock reading its own due time, and a timer
that a callback schedules inside the window fires in the same advance. A delay of zero or less
is due at once, so it fires on the next advance, even ``advance(0)``. Cancelled timers are
skipped. An exception raised by a callback propagates out of ``advance`` (the test should see
it), leaving the clock at that timer's due time.

``advance`` runs callbacks only; tasks woken by them run when the test yields to the loop. The
async helpers let tasks take part: :meth:`VirtualClock.run_for` passes time one due timer at a
time and lets the loop run between timers (so a task woken at 50 ms can schedule its next
timer before 100 ms is reached); :meth:`VirtualClock.run_until` jumps from timer to timer until
an awaitable finishes, the way trio's autojumping mock clock does; :meth:`VirtualClock.sleep` is
``asyncio.sleep`` in virtual time. None of them waits for real time to pass.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Awaitable, Callable
from typing import TypeVar

from wharf.core.clock import Clock

__all__ = ["VirtualClock"]

T = TypeVar("T")

_NS_PER_MS = 1_000_000
_NS_PER_S = 1_000_000_000
# Loop turns that let every task woken by a timer run (and chain its own wake-ups) before the
# clock moves again; a woken task typically needs one turn per future it passes through.
_SETTLE_TURNS = 50


class VirtualTimer:
    """A timer of a :class:`VirtualClock`; ``cancel`` before it is due and it never fires."""

    __slots__ = ("_cancelled", "callback", "due_ns")

    def __init__(self, due_ns: int, callback: Callable[[], None]) -> None:
        self.due_ns = due_ns
        self.callback = callback
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    def cancelled(self) -> bool:
        return self._cancelled


class VirtualClock(Clock):
    """A :class:`Clock` whose wall time, monotonic time and timers move only when told to."""

    def __init__(self, start_ms: int = 1_700_000_000_000) -> None:
        self._start_ms = start_ms
        self._wall_step_ms = 0
        self._elapsed_ns = 0
        self._timers: list[tuple[int, int, VirtualTimer]] = []
        self._scheduled = 0  # tie-breaker: timers due together fire in scheduling order

    # ------------------------------------------------------------------ reading

    def now_ms(self) -> int:
        return self._start_ms + self._wall_step_ms + self._elapsed_ns // _NS_PER_MS

    def monotonic(self) -> float:
        return self._elapsed_ns / _NS_PER_S

    # ------------------------------------------------------------------ timers

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> VirtualTimer:
        timer = VirtualTimer(self._elapsed_ns + max(round(delay_s * _NS_PER_S), 0), callback)
        heapq.heappush(self._timers, (timer.due_ns, self._scheduled, timer))
        self._scheduled += 1
        return timer

    def pending(self) -> int:
        """How many timers are waiting to fire (cancelled ones not counted)."""
        return sum(1 for _, _, timer in self._timers if not timer.cancelled())

    def next_due_s(self) -> float | None:
        """Seconds until the next live timer is due (0 if it is due now), or None."""
        self._drop_cancelled()
        if not self._timers:
            return None
        return (self._timers[0][0] - self._elapsed_ns) / _NS_PER_S

    # ------------------------------------------------------------------ moving time

    def advance(self, ms: int) -> None:
        """Move time ``ms`` milliseconds forward, firing every timer due on the way, in order."""
        self._advance_ns(ms * _NS_PER_MS)

    def advance_s(self, seconds: float) -> None:
        """:meth:`advance` in seconds."""
        self._advance_ns(round(seconds * _NS_PER_S))

    def step_wall_clock(self, ms: int) -> None:
        """Step the wall-clock reading alone by ``ms`` (negative: back); nothing fires."""
        self._wall_step_ms += ms

    def _advance_ns(self, delta_ns: int) -> None:
        if delta_ns < 0:
            raise ValueError(f"virtual time only moves forward, not by {delta_ns} ns")
        target = self._elapsed_ns + delta_ns
        while True:
            self._drop_cancelled()
            if not self._timers or self._timers[0][0] > target:
                break
            due, _, timer = heapq.heappop(self._timers)
            self._elapsed_ns = max(self._elapsed_ns, due)
            timer.cancel()  # fired: a late cancel() is then harmless
            timer.callback()
        self._elapsed_ns = target

    def _drop_cancelled(self) -> None:
        while self._timers and self._timers[0][2].cancelled():
            heapq.heappop(self._timers)

    # ------------------------------------------------------------------ with the event loop

    async def sleep(self, delay_s: float) -> None:
        """Wait until the clock has been moved ``delay_s`` seconds on."""
        woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def wake() -> None:
            if not woken.done():
                woken.set_result(None)

        timer = self.call_later(delay_s, wake)
        try:
            await woken
        finally:
            timer.cancel()

    async def run_for(self, ms: float) -> None:
        """Let ``ms`` milliseconds pass timer by timer, letting tasks run after each one."""
        target_ns = self._elapsed_ns + round(ms * _NS_PER_MS)
        await _settle()
        while True:
            due_s = self.next_due_s()
            if due_s is None or self._elapsed_ns + round(due_s * _NS_PER_S) > target_ns:
                break
            self._advance_ns(round(due_s * _NS_PER_S))
            await _settle()
        self._advance_ns(max(target_ns - self._elapsed_ns, 0))
        await _settle()

    async def run_until(self, awaitable: Awaitable[T], *, limit_s: float = 3600.0) -> T:
        """Await ``awaitable``, jumping to the next due timer whenever the loop has gone idle.

        Raises :class:`TimeoutError` if ``limit_s`` virtual seconds pass first, and
        :class:`RuntimeError` if it is still waiting with no timer left to fire (it could
        only finish through something outside this clock).
        """
        task = asyncio.ensure_future(awaitable)
        deadline_ns = self._elapsed_ns + round(limit_s * _NS_PER_S)
        try:
            while True:
                await _settle()
                if task.done():
                    return task.result()
                due_s = self.next_due_s()
                if due_s is None:
                    raise RuntimeError("waiting with no timer left to fire: it would never finish")
                step_ns = round(due_s * _NS_PER_S)
                if self._elapsed_ns + step_ns > deadline_ns:
                    raise TimeoutError(f"not finished within {limit_s} s of virtual time")
                self._advance_ns(step_ns)
        finally:
            if not task.done():
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


async def _settle() -> None:
    for _ in range(_SETTLE_TURNS):
        await asyncio.sleep(0)
