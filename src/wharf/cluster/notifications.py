"""Hearing what other nodes commit: ``LISTEN`` on a connection of its own.

How it works: writers send ``pg_notify(channel, payload)`` inside their transactions, so a
notification arrives only once (and if) its transaction commits. :class:`NotificationListener`
holds one connection outside the pool (:meth:`Database.open_listener`: a pooled connection
would lose its ``LISTEN`` when returned), listens on its channels and calls
``on_notify(channel, payload)`` for every notification. A notification is only a hint: the
caller re-reads what it caches. Notifications sent while the connection is down are lost, so
``on_connect()`` is called each time the connection is (re)established; a lost connection is
retried every ``retry_interval`` seconds until :meth:`close`. The connection has the pool's
settings (statement timeout, TCP keepalives and user timeout), so a dead link ends the wait
instead of hanging it.

The catalogue's listener (:mod:`wharf.cluster.catalog_listener`) and the AMQP tables' (in
``core/queues/cluster_registry.py``) are two of these; the streams' high watermarks have their
own (:mod:`wharf.cluster.streams.watermarks`), which also tracks per-partition state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from wharf.cluster.database import Database

__all__ = ["NotificationListener"]

log = logging.getLogger(__name__)


class NotificationListener:
    """Calls ``on_notify(channel, payload)`` for every notification on ``channels`` and
    ``on_connect()`` on every (re)connection; see the module docstring. ``what`` names the
    notifications in logs and the task's name."""

    def __init__(
        self,
        db: Database,
        channels: Sequence[str],
        on_notify: Callable[[str, str], None],
        on_connect: Callable[[], None],
        *,
        what: str,
        retry_interval: float = 1.0,
    ) -> None:
        self._db = db
        self._channels = tuple(channels)
        self._on_notify = on_notify
        self._on_connect = on_connect
        self._what = what
        self._retry_interval = retry_interval
        self._task: asyncio.Task[None] | None = None
        self.listening = asyncio.Event()
        """Set while the ``LISTEN`` connection is up."""

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"wharf {self._what} listener")

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
                log.warning("%s notifications from %s lost: %s", self._what, self._db.name, exc)
            await asyncio.sleep(self._retry_interval)

    async def _listen(self) -> None:
        connection = await self._db.open_listener()
        try:
            for channel in self._channels:
                await connection.execute(f"LISTEN {channel}")
            self.listening.set()
            self._on_connect()  # whatever changed while nobody listened
            # closed before the connection, also when cancelled: it holds the connection's lock
            async with contextlib.aclosing(connection.notifies()) as notices:
                async for notice in notices:
                    self._on_notify(notice.channel, notice.payload)
        finally:
            self.listening.clear()
            await connection.close()
