"""Hearing what other nodes commit to the AMQP tables: ``LISTEN`` on a connection of its own.

How it works: like :mod:`wharf.cluster.catalog_listener`, but on the two channels of
:mod:`.definitions` and :mod:`.messages`, and with payloads: ``on_notify(channel, payload)`` is
called for each notification. Every notification is a hint; notifications sent while the
connection was down are lost, so ``on_connect()`` is called each time the connection is
(re)established, for the caller to re-read whatever it caches. A lost connection is retried
every ``retry_interval`` seconds until :meth:`close`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from wharf.cluster.database import Database
from wharf.cluster.queues import definitions, messages

__all__ = ["QueueListener"]

log = logging.getLogger(__name__)


class QueueListener:
    """Calls ``on_notify(channel, payload)`` for every AMQP notification; see above."""

    def __init__(
        self,
        db: Database,
        on_notify: Callable[[str, str], None],
        on_connect: Callable[[], None],
        retry_interval: float = 1.0,
    ) -> None:
        self._db = db
        self._on_notify = on_notify
        self._on_connect = on_connect
        self._retry_interval = retry_interval
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        """Set while the ``LISTEN`` connection is up."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="wharf amqp listener")

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                await self._listen()
            except Exception as exc:  # any failure of the connection: say so and reconnect
                log.warning("AMQP notifications from %s lost: %s", self._db.name, exc)
            await asyncio.sleep(self._retry_interval)

    async def _listen(self) -> None:
        connection = await self._db.open_listener()
        try:
            await connection.execute(f"LISTEN {definitions.CHANNEL}")
            await connection.execute(f"LISTEN {messages.CHANNEL}")
            self.listening.set()
            self._on_connect()
            async with contextlib.aclosing(connection.notifies()) as notices:
                async for notice in notices:
                    self._on_notify(notice.channel, notice.payload)
        finally:
            self.listening.clear()
            await connection.close()
