"""Publisher confirms of one channel (confirm.select).

How it works: every publish on a channel in confirm mode gets the next sequence number (1, 2,
...) and is queued here with the core's :class:`~wharf.core.queues.vhost.PublishResult`. One task
per channel waits for each result to be stored, in publish order: a persistent message routed
to a durable queue is stored once its record is fsynced (group commit), anything else at once;
a message a queue refused (``x-overflow: reject-publish``) or that could not be written (disk
full) is a nack. Settled sequence numbers are sent on the next event-loop iteration, a run of
acks as one Basic.Ack with ``multiple=true`` (since everything before it is settled too).

With an observer, each publish is timed from its numbering (its content complete) to its
Basic.Ack or Basic.Nack being written, under the operation name ``Basic.Publish``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from time import perf_counter
from typing import TYPE_CHECKING

from pamqp import base, commands

from wharf.errors import BrokerError, StorageError
from wharf.protocol.amqp.timing import RequestObserver

if TYPE_CHECKING:
    from wharf.core.queues.vhost import PublishResult

__all__ = ["PublisherConfirms"]


class PublisherConfirms:
    """Sequence numbers, durability waits and coalesced Basic.Ack/Nack for one channel."""

    def __init__(
        self, send: Callable[[base.Frame], None], observer: RequestObserver | None = None
    ) -> None:
        self._send = send
        self._observer = observer
        self._seq = 0
        # (sequence number, result, perf_counter() at publish or 0.0 when nobody observes)
        self._pending: deque[tuple[int, PublishResult, float]] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._settled: list[tuple[int, bool, float]] = []  # (seq, stored?, started) in order
        self._flush_scheduled = False
        self._closed = False

    def published(self, result: PublishResult) -> None:
        """Number the next publish and start waiting for it to be stored."""
        self._seq += 1
        self._pending.append(
            (self._seq, result, perf_counter() if self._observer is not None else 0.0)
        )
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
            seq, result, started = pending.popleft()
            ok = not result.rejected
            if ok:
                try:
                    await result.wait_durable()
                except (StorageError, BrokerError):
                    ok = False  # could not be stored (disk full, ...): nack
            self._settled.append((seq, ok, started))
            if not self._flush_scheduled:
                self._flush_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        settled, self._settled = self._settled, []
        if self._closed:
            return
        last_ack = 0
        for seq, ok, _ in settled:
            if ok:
                last_ack = seq
                continue
            if last_ack:
                self._send(commands.Basic.Ack(delivery_tag=last_ack, multiple=True))
                last_ack = 0
            self._send(commands.Basic.Nack(delivery_tag=seq, multiple=False, requeue=False))
        if last_ack:
            self._send(commands.Basic.Ack(delivery_tag=last_ack, multiple=True))
        observer = self._observer
        if observer is not None:
            now = perf_counter()
            for _, _, started in settled:
                observer.observe("Basic.Publish", now - started)
