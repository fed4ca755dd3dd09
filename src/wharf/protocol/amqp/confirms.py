"""Publisher confirms of one channel (confirm.select).

How it works: every publish on a channel in confirm mode gets the next sequence number (1, 2,
...) and is queued here with the core's :class:`~wharf.core.vhosts.PublishResult`. One task
per channel waits for each result to be stored, in publish order: a persistent message routed
to a durable queue is stored once its record is fsynced (group commit), anything else at once;
a message a queue refused (``x-overflow: reject-publish``) or that could not be written (disk
full) is a nack. Settled sequence numbers are sent on the next event-loop iteration, a run of
acks as one Basic.Ack with ``multiple=true`` (since everything before it is settled too).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from pamqp import base, commands

from wharf.errors import BrokerError, StorageError

if TYPE_CHECKING:
    from wharf.core.vhosts import PublishResult

__all__ = ["PublisherConfirms"]


class PublisherConfirms:
    """Sequence numbers, durability waits and coalesced Basic.Ack/Nack for one channel."""

    def __init__(self, send: Callable[[base.Frame], None]) -> None:
        self._send = send
        self._seq = 0
        self._pending: deque[tuple[int, PublishResult]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._settled: list[tuple[int, bool]] = []  # (sequence number, stored?) in order
        self._flush_scheduled = False
        self._closed = False

    def published(self, result: PublishResult) -> None:
        """Number the next publish and start waiting for it to be stored."""
        self._seq += 1
        self._pending.append((self._seq, result))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._wait_in_order())
        self._wakeup.set()

    def close(self) -> None:
        """The channel is gone: confirm nothing more."""
        self._closed = True
        self._pending.clear()
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _wait_in_order(self) -> None:
        pending = self._pending
        while not self._closed:
            if not pending:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            seq, result = pending.popleft()
            ok = not result.rejected
            if ok:
                try:
                    await result.wait_durable()
                except (StorageError, BrokerError):
                    ok = False  # could not be stored (disk full, ...): nack
            self._settled.append((seq, ok))
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        settled, self._settled = self._settled, []
        if self._closed:
            return
        last_ack = 0
        for seq, ok in settled:
            if ok:
                last_ack = seq
                continue
            if last_ack:
                self._send(commands.Basic.Ack(delivery_tag=last_ack, multiple=True))
                last_ack = 0
            self._send(commands.Basic.Nack(delivery_tag=seq, multiple=False, requeue=False))
        if last_ack:
            self._send(commands.Basic.Ack(delivery_tag=last_ack, multiple=True))
