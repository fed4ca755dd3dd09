"""Periodic async work on a :class:`~wharf.core.clock.Clock`'s timers.

How it works. A :class:`TimerChain` holds at most one armed clock timer. When it fires, the
chain starts its job (a coroutine function) as a task; when the job ends, the chain asks its
``next_delay`` how long to wait and arms the next timer (``None``: nothing to do until
:meth:`TimerChain.wake`). So each tick re-arms the chain, two
runs of the job never overlap, and time spent in the job is not counted in the wait, as with
a ``while True: sleep; work`` loop. :meth:`TimerChain.wake` asks again early: if the new delay
ends sooner than the armed timer, the timer is replaced (a nearer deadline appeared); during a
run it does nothing, since the next delay is computed when the run ends. :meth:`TimerChain.close`
cancels the armed timer and waits for a running job to finish.

Because the timers are the clock's, a test driving a virtual clock runs this work in virtual
time, without real sleeps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from wharf.core.clock import Clock, TimerHandle

__all__ = ["TimerChain"]

log = logging.getLogger(__name__)


class TimerChain:
    """Runs ``job`` each time ``next_delay()`` seconds pass on ``clock``; see the module
    docstring. ``name`` says what the job is in the log when it fails unexpectedly."""

    def __init__(
        self,
        clock: Clock,
        job: Callable[[], Awaitable[None]],
        next_delay: Callable[[], float | None],
        name: str,
    ) -> None:
        self._clock = clock
        self._job = job
        self._next_delay = next_delay
        self._name = name
        self._timer: TimerHandle | None = None
        self._due = 0.0  # monotonic reading at which the armed timer fires
        self._running: asyncio.Task[None] | None = None
        self._started = False
        self._closed = False

    def start(self) -> None:
        """Arm the first timer."""
        if self._started or self._closed:
            return
        self._started = True
        self._arm()

    def wake(self) -> None:
        """Fire sooner if ``next_delay()`` now ends before the armed timer; no-op before
        :meth:`start`, after :meth:`close` and while the job runs."""
        if not self._started or self._closed or self._running is not None:
            return
        delay = self._next_delay()
        if delay is None:
            return
        delay = max(delay, 0.0)
        if self._timer is None or self._clock.monotonic() + delay < self._due:
            self._arm(delay)

    async def close(self) -> None:
        """Cancel the armed timer and wait for a running job; nothing runs afterwards."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._running is not None:
            await asyncio.shield(self._running)

    def _arm(self, delay: float | None = None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if delay is None:
            delay = self._next_delay()
            if delay is None:
                return  # idle until woken
            delay = max(delay, 0.0)
        self._due = self._clock.monotonic() + delay
        self._timer = self._clock.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self._closed:
            return
        self._running = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        try:
            await self._job()
        except Exception:
            log.exception("%s failed; trying again at the next tick", self._name)
        finally:
            self._running = None
            if not self._closed:
                self._arm()
