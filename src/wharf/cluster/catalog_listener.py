"""Hearing of catalogue changes made by any node: ``LISTEN wharf_catalog`` on a connection of
its own.

How it works: the catalogue's writes (:mod:`wharf.cluster.catalog`) send
``pg_notify('wharf_catalog', <topic name>)`` inside their transactions. :class:`CatalogListener`
holds one connection outside the pool (:meth:`Database.open_listener`: a pooled connection
would lose its ``LISTEN`` when returned), listens on that channel and calls ``on_change()`` for
every notification. A notification is only a hint: ``on_change`` re-reads what it caches.
Notifications sent while the connection is down are lost, so ``on_change()`` is also called
each time the connection is (re)established; a lost connection is retried every
``retry_interval`` seconds until :meth:`close`. The connection has the pool's settings
(statement timeout, TCP keepalives and user timeout), so a dead link ends the wait instead of
hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from wharf.cluster.catalog import CHANNEL
from wharf.cluster.database import Database

__all__ = ["CatalogListener"]

log = logging.getLogger(__name__)


class CatalogListener:
    """Calls ``on_change()`` on every catalogue change any node commits; see the module
    docstring."""

    def __init__(
        self, db: Database, on_change: Callable[[], None], retry_interval: float = 1.0
    ) -> None:
        self._db = db
        self._on_change = on_change
        self._retry_interval = retry_interval
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        """Set while the ``LISTEN`` connection is up."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="wharf catalog listener")

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
                log.warning("catalogue notifications from %s lost: %s", self._db.name, exc)
            await asyncio.sleep(self._retry_interval)

    async def _listen(self) -> None:
        connection = await self._db.open_listener()
        try:
            await connection.execute(f"LISTEN {CHANNEL}")
            self.listening.set()
            self._on_change()  # whatever changed while nobody listened
            # closed before the connection, also when cancelled: it holds the connection's lock
            async with contextlib.aclosing(connection.notifies()) as notices:
                async for _ in notices:
                    self._on_change()
        finally:
            self.listening.clear()
            await connection.close()
