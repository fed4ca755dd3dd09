"""The AMQP 0-9-1 listener: asyncio sockets in front of :class:`AMQPConnection`.

How it works
------------
:class:`AMQPListener` binds one TCP server; each accepted socket gets an
:class:`AMQPProtocol` (an ``asyncio.Protocol``) and an
:class:`~wharf.protocol.amqp.connection.AMQPConnection` running as one task.

* Writes are gathered: every ``write`` during one event-loop iteration is joined and handed to
  the transport once, on the next iteration (many deliveries become one ``send``).
* Flow control, both ways: when the transport's write buffer passes its high-water mark we
  stop reading from the socket (a slow consumer cannot make us buffer without bound) and
  resume on ``resume_writing``; the connection itself pauses reading when unparsed input piles
  up (more than a few frames).
* Heartbeats: once tuned, a timer sends a heartbeat frame when nothing was written for half the
  interval, and closes the connection when nothing was received for two intervals.
* A handshake that does not reach Open-Ok within ``handshake_timeout`` is dropped; a
  connection that sent Close and gets no Close-Ok within a few seconds is dropped too.
* Resource alarms (:mod:`wharf.server.amqp.alarms`), polled once a second: while memory is
  above ``memory_high_watermark_bytes`` or free disk below ``disk_free_limit_bytes``, a
  connection that publishes gets Connection.Blocked and is no longer read until the alarm
  clears (Connection.Unblocked).
* Figures and logs: a :class:`~wharf.server.logging_setup.ConnectionLog` writes one line when
  the connection opens and one when it closes: info when the client closed it (Connection.Close
  or end of stream), a warning with the reason otherwise (protocol error, missed heartbeats,
  refused login, handshake timeout, operator close, server shutdown, reset), with the user,
  vhost, client product, requests and bytes in and out. The connection counts bytes both
  ways; synchronous methods and confirmed publishes are timed into the broker's
  ``stats.requests`` under ``amqp`` (``wharf_request_seconds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Sequence
from typing import Any, cast

from wharf.core.broker import Broker
from wharf.protocol.amqp.connection import AMQPConnection, AMQPSettings
from wharf.protocol.amqp.errors import ReplyCode
from wharf.protocol.amqp.state import ConnState
from wharf.server.amqp.alarms import ResourceAlarm
from wharf.server.listener import Endpoint
from wharf.server.logging_setup import ConnectionLog
from wharf.server.settings import ServerSettings

__all__ = ["AMQPListener", "AMQPProtocol", "create_amqp_listener"]

log = logging.getLogger("wharf.amqp")

_WRITE_HIGH_WATER = 4 << 20
_WRITE_LOW_WATER = 1 << 20
_CLOSE_OK_TIMEOUT_S = 5.0
ALARM_CHECK_INTERVAL_S = 1.0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _text(value: object) -> str:
    """A client-properties value as text (tables may carry byte strings)."""
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value)


class AMQPProtocol(asyncio.Protocol):
    """One client socket; see the module docstring."""

    def __init__(self, listener: AMQPListener) -> None:
        self._listener = listener
        self._transport: asyncio.Transport | None = None
        self._pending: list[bytes] = []
        self._flush_scheduled = False
        self._reading_paused_by_conn = False
        self._writing_paused = False
        self._closing = False
        self._last_received = time.monotonic()
        self._last_sent = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self.conn: AMQPConnection | None = None
        self._log: ConnectionLog | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self._started = time.monotonic()
        self._closing_since: float | None = None

    # -- asyncio.Protocol ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        transport = cast(asyncio.Transport, transport)
        self._transport = transport
        transport.set_write_buffer_limits(_WRITE_HIGH_WATER, _WRITE_LOW_WATER)
        sock = transport.get_extra_info("socket")
        if sock is not None:  # small frames (acks, confirms, deliveries) must not wait for Nagle
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._log = ConnectionLog("amqp", transport)
        peername = transport.get_extra_info("peername") or ("?", 0)
        host = str(peername[0])
        peer = f"{host}:{peername[1]}"
        self.conn = AMQPConnection(
            self._listener.broker,
            self,
            peer=peer,
            is_loopback=_is_loopback(host),
            settings=self._listener.amqp_settings,
            request_stats=self._listener.broker.stats.request_timer("amqp"),
        )
        self.conn.alarm = self._listener.alarm.reason if self._listener.alarm else None
        self._listener.protocols.add(self)
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"amqp {peer}")
        self._schedule_tick(1.0)

    @property
    def id(self) -> str:
        """``amqp-<n>``, with the number the connection's log lines carry (``conn=<n>``)."""
        return f"amqp-{self._log.id}" if self._log is not None else "amqp-?"

    @property
    def connected_since_ms(self) -> int | None:
        """Wall-clock time the connection was accepted, in ms since the epoch."""
        return self._log.opened_at_ms if self._log is not None else None

    @property
    def requests(self) -> int:
        """Method frames received so far (Basic.Publish included)."""
        return self.conn.requests if self.conn is not None else 0

    def _figures(self) -> dict[str, object]:
        conn = self.conn
        if conn is None:
            return {"bytes_in": self.bytes_in, "bytes_out": self.bytes_out}
        props = conn.client_properties
        fields: dict[str, object] = {
            "user": conn.username,
            "vhost": conn.vhost_name,
            "client": _text(props.get("product")),
        }
        if props.get("connection_name"):
            fields["connection_name"] = _text(props["connection_name"])
        return {
            **fields,
            "requests": conn.requests,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
        }

    def data_received(self, data: bytes) -> None:
        self.bytes_in += len(data)
        self._last_received = time.monotonic()
        if self.conn is not None:
            self.conn.receive_data(data)

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._listener.forget(self)
        if self._timer is not None:
            self._timer.cancel()
        conn = self.conn
        if conn is not None and not conn.closed:
            conn.connection_lost()
        if self._log is not None:
            reason = conn.close_reason if conn is not None else None
            if conn is not None and conn.client_closed:
                self._log.closed(details=self._figures())
            elif reason is not None:
                self._log.closed(reason, details=self._figures())
            else:  # the client went away without Connection.Close: info on EOF, else a warning
                self._log.closed("connection lost" if exc else None, exc, details=self._figures())
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._pending.clear()

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._update_reading()
        if self.conn is not None:
            self.conn.set_writable(False)  # no more deliveries until the client catches up

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._update_reading()
        if self.conn is not None:
            self.conn.set_writable(True)

    # -- Transport (what AMQPConnection writes to) -------------------------------------------

    def write(self, data: bytes) -> None:
        if self._transport is None or self._transport.is_closing():
            return
        self._pending.append(data)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._flush()
        if self._transport is not None:
            self._transport.close()

    def pause_reading(self) -> None:
        self._reading_paused_by_conn = True
        self._update_reading()

    def resume_reading(self) -> None:
        self._reading_paused_by_conn = False
        self._update_reading()

    # -- internals ----------------------------------------------------------------------------

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._reading_paused_by_conn or self._writing_paused:
            if transport.is_reading():
                transport.pause_reading()
        elif not transport.is_reading():
            transport.resume_reading()

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._pending or self._transport is None or self._transport.is_closing():
            self._pending.clear()
            return
        data = self._pending[0] if len(self._pending) == 1 else b"".join(self._pending)
        self._pending.clear()
        self._last_sent = time.monotonic()
        self.bytes_out += len(data)
        self._transport.write(data)

    async def _run(self) -> None:
        assert self.conn is not None
        await self.conn.run()

    def _schedule_tick(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(delay, self._tick)

    def _tick(self) -> None:
        """Handshake timeout, Close-Ok timeout and heartbeats, checked once per period."""
        conn = self.conn
        if conn is None or conn.closed or self._transport is None:
            return
        now = time.monotonic()
        period = 1.0
        if conn.state is not ConnState.OPEN and conn.state is not ConnState.CLOSING:
            if now - self._started > conn.settings.handshake_timeout:
                conn.close_reason = "handshake not finished in time"
                self.abort()
                return
        elif conn.state is ConnState.CLOSING:
            if self._closing_since is None:
                self._closing_since = now
            elif now - self._closing_since > _CLOSE_OK_TIMEOUT_S:
                conn.close_reason = f"{conn.close_reason or 'closing'}; no Close-Ok from the client"
                self.abort()
                return
        elif conn.heartbeat:
            interval = conn.heartbeat
            if now - self._last_received > 2 * interval:
                conn.close_reason = f"missed heartbeats from client, timeout: {interval}s"
                # The client is presumed gone; like RabbitMQ, just drop the socket.
                self.abort()
                return
            if now - self._last_sent >= interval / 2:
                self.write(conn.writer.heartbeat())
            period = max(0.5, min(interval / 2, 5.0))
        self._schedule_tick(period)

    def abort(self) -> None:
        if self.conn is not None:
            self.conn.connection_lost()
        if self._transport is not None:
            self._transport.abort()

    def shutdown(self) -> None:
        """Graceful server stop: send Connection.Close (320 CONNECTION_FORCED)."""
        conn = self.conn
        if conn is not None and not conn.closed:
            conn.close_from_server(ReplyCode.CONNECTION_FORCED, "broker shutdown")


class AMQPListener:
    """The AMQP front end of ``wharf serve`` (see :mod:`wharf.server.listener`)."""

    name = "amqp"

    def __init__(self, host: str, port: int, amqp_settings: AMQPSettings | None = None) -> None:
        self.host = host
        self.port = port
        self.amqp_settings = amqp_settings or AMQPSettings()
        self.protocols: set[AMQPProtocol] = set()
        self._server: asyncio.Server | None = None
        self._broker: Broker | None = None
        self._all_closed = asyncio.Event()
        self.alarm: ResourceAlarm | None = None
        self._alarm_task: asyncio.Task[None] | None = None

    def forget(self, protocol: AMQPProtocol) -> None:
        self.protocols.discard(protocol)
        if not self.protocols:
            self._all_closed.set()

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
            lambda: AMQPProtocol(self), self.host, self.port, reuse_address=True
        )
        endpoints: list[Endpoint] = []
        for sock in self._server.sockets:
            addr: Any = sock.getsockname()
            endpoints.append(("amqp", str(addr[0]), int(addr[1])))
        self._alarm_task = loop.create_task(self._watch_resources())
        return endpoints

    async def _watch_resources(self) -> None:
        """Poll the resource alarm; tell every connection when it is raised or cleared."""
        assert self.alarm is not None
        while True:
            await asyncio.sleep(ALARM_CHECK_INTERVAL_S)
            if self.alarm.check():
                reason = self.alarm.reason
                log.warning("amqp: resource alarm %s", reason or "cleared")
                for protocol in list(self.protocols):
                    if protocol.conn is not None and not protocol.conn.closed:
                        protocol.conn.set_alarm(reason)

    async def stop_accepting(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._alarm_task is not None:
            self._alarm_task.cancel()

    async def close(self, grace_s: float) -> None:
        if self._alarm_task is not None:
            self._alarm_task.cancel()
        for protocol in list(self.protocols):
            protocol.shutdown()
        if self.protocols:
            self._all_closed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), grace_s)
        for protocol in list(self.protocols):
            protocol.abort()
        if self._server is not None:
            await self._server.wait_closed()


def create_amqp_listener(settings: ServerSettings) -> AMQPListener:
    """The factory ``server/app.py`` registers for ``--amqp-port``."""
    return AMQPListener(settings.host, settings.amqp_port)
