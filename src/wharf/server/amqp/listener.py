"""The AMQP 0-9-1 listener: accepts sockets, keeps the open connections, raises alarms.

How it works
------------
:class:`AMQPListener` binds one TCP server; each accepted socket gets an
:class:`~wharf.server.amqp.adapter.AMQPAdapter` (the asyncio side of one connection, around
the sans-I/O :class:`~wharf.protocol.amqp.connection.AMQPConnection`), kept in
``connections`` while it is open (the HTTP API lists and closes them).

* Resource alarms (:mod:`wharf.server.amqp.alarms`), polled once a second on the broker's
  clock (a timer that schedules the next one, cancelled when the listener stops accepting):
  while memory is above ``memory_high_watermark_bytes`` or free disk below
  ``disk_free_limit_bytes``, a connection that publishes gets Connection.Blocked and is no
  longer read until the alarm clears (Connection.Unblocked).
* Work a closed connection leaves behind (deleting its exclusive queues) runs in tasks the
  listener keeps until they end.
* Shutdown is staged: ``stop_accepting`` closes the server socket; ``close`` sends
  Connection.Close (320 CONNECTION_FORCED) on every connection, waits up to the grace period
  for them to go, then drops the rest.
* Synchronous methods and confirmed publishes of every connection are timed into the
  broker's ``stats.requests`` under ``amqp`` (``wharf_request_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Sequence
from typing import Any

from wharf.core.broker import Broker
from wharf.core.clock import TimerHandle
from wharf.protocol.amqp.connection import AMQPSettings
from wharf.server.amqp.adapter import AMQPAdapter
from wharf.server.amqp.alarms import ResourceAlarm
from wharf.server.listener import Endpoint
from wharf.server.settings import ServerSettings

__all__ = ["AMQPListener", "create_amqp_listener"]

log = logging.getLogger("wharf.amqp")

ALARM_CHECK_INTERVAL_S = 1.0


class AMQPListener:
    """The AMQP front end of ``wharf serve`` (see :mod:`wharf.server.listener`)."""

    name = "amqp"

    def __init__(self, host: str, port: int, amqp_settings: AMQPSettings | None = None) -> None:
        self.host = host
        self.port = port
        self.amqp_settings = amqp_settings or AMQPSettings()
        self.connections: set[AMQPAdapter] = set()
        self._server: asyncio.Server | None = None
        self._broker: Broker | None = None
        self._all_closed = asyncio.Event()
        self.alarm: ResourceAlarm | None = None
        self._alarm_timer: TimerHandle | None = None
        self._background: set[asyncio.Task[None]] = set()

    def forget(self, connection: AMQPAdapter) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._all_closed.set()

    def run_in_background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        """Run work a closed connection left behind; failures are logged."""
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[None]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("amqp: background work failed", exc_info=task.exception())

    @property
    def broker(self) -> Broker:
        assert self._broker is not None, "listener not started"
        return self._broker

    async def start(self, broker: Broker) -> Sequence[Endpoint]:
        self._broker = broker
        self.alarm = ResourceAlarm(broker.config, broker.path)
        self.alarm.check()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: AMQPAdapter(self), self.host, self.port, reuse_address=True
        )
        endpoints: list[Endpoint] = []
        for sock in self._server.sockets:
            addr: Any = sock.getsockname()
            endpoints.append(("amqp", str(addr[0]), int(addr[1])))
        self._schedule_alarm_check()
        return endpoints

    def _schedule_alarm_check(self) -> None:
        self._alarm_timer = self.broker.clock.call_later(
            ALARM_CHECK_INTERVAL_S, self._check_resources
        )

    def _check_resources(self) -> None:
        """Poll the resource alarm; tell every connection when it is raised or cleared."""
        self._schedule_alarm_check()
        assert self.alarm is not None
        if self.alarm.check():
            reason = self.alarm.reason
            log.warning("amqp: resource alarm %s", reason or "cleared")
            for connection in list(self.connections):
                connection.set_alarm(reason)

    def _stop_alarm_checks(self) -> None:
        if self._alarm_timer is not None:
            self._alarm_timer.cancel()
            self._alarm_timer = None

    async def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()
        self._stop_alarm_checks()

    async def close(self, grace_s: float) -> None:
        self._stop_alarm_checks()
        for connection in list(self.connections):
            connection.close_from_server("broker shutdown")
        if self.connections:
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), grace_s)
        for connection in list(self.connections):
            connection.abort("server shutdown")
        if self._server is not None:
            await self._server.wait_closed()


def create_amqp_listener(settings: ServerSettings) -> AMQPListener:
    """The factory ``server/app.py`` registers for ``--amqp-port``."""
    return AMQPListener(settings.host, settings.amqp_port)
