"""Signals and the staged graceful shutdown of the server.

How it works (the uvicorn ``server.py`` model): the first SIGTERM or SIGINT sets
:attr:`ShutdownRequest.requested`; the server then

1. stops accepting: every listener closes its listening sockets;
2. lets connections finish: every listener's ``close(grace)`` runs concurrently, asking its
   connections to complete in-flight work and go away; after the grace period (plus a small
   margin) or on a second signal, whatever is still running is cancelled;
3. closes the broker (the caller's ``async with``), which flushes and closes every log.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

from wharf.server.listener import Listener

__all__ = ["ShutdownRequest", "stop_listeners"]

logger = logging.getLogger("wharf.server")

_SIGNALS = (signal.SIGTERM, signal.SIGINT)
_CLOSE_MARGIN_S = 2.0  # how far a listener's close() may overrun its grace before cancellation


class ShutdownRequest:
    """Turns SIGTERM/SIGINT into events: the first asks for a graceful stop, a second forces it."""

    def __init__(self) -> None:
        self.requested = asyncio.Event()
        self.forced = asyncio.Event()
        self.reason: str | None = None

    def install(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in _SIGNALS:
            loop.add_signal_handler(sig, self._on_signal, sig)

    def uninstall(self, loop: asyncio.AbstractEventLoop) -> None:
        for sig in _SIGNALS:
            loop.remove_signal_handler(sig)

    def request(self, reason: str) -> None:
        """Ask for a graceful stop (what the first signal does)."""
        if not self.requested.is_set():
            self.reason = reason
            self.requested.set()

    def _on_signal(self, sig: signal.Signals) -> None:
        if not self.requested.is_set():
            logger.info("received %s, shutting down gracefully", sig.name)
            self.request(sig.name)
        elif not self.forced.is_set():
            logger.warning("received %s again, closing connections now", sig.name)
            self.forced.set()


async def stop_listeners(
    listeners: Sequence[Listener], grace_s: float, forced: asyncio.Event
) -> None:
    """Stages 1 and 2 of the shutdown; never raises (failures are logged)."""
    for listener in listeners:
        try:
            await listener.stop_accepting()
        except Exception:
            logger.exception("listener %s failed to stop accepting", listener.name)
    tasks = {
        asyncio.create_task(listener.close(grace_s), name=f"close {listener.name}"): listener
        for listener in listeners
    }
    if not tasks:
        return
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_s + _CLOSE_MARGIN_S
    pending: set[asyncio.Task[None]] = set(tasks)
    force_wait = asyncio.create_task(forced.wait())
    try:
        while pending and not forced.is_set():
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            done, _ = await asyncio.wait(
                [*pending, force_wait], timeout=remaining, return_when=asyncio.FIRST_COMPLETED
            )
            pending.difference_update(done)
    finally:
        force_wait.cancel()
        for task in pending:
            logger.warning("listener %s did not close in time; cancelling it", tasks[task].name)
            task.cancel()
    for task, listener in tasks.items():
        try:
            await task
        except asyncio.CancelledError:
            pass
        except Exception:
            logger.exception("listener %s failed while closing", listener.name)
