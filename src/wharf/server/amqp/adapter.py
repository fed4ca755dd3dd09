"""One AMQP client socket: an asyncio Protocol around the sans-I/O :class:`AMQPConnection`.

How it works
------------
``data_received`` hands the bytes to :meth:`AMQPConnection.receive_data
<wharf.protocol.amqp.connection.AMQPConnection.receive_data>` and carries out the
:mod:`actions <wharf.protocol.amqp.actions>` it returns; every other call into the connection
(a wait that finished, a timer, an alarm, a close) is followed by the same step. This is the
one place per connection with tasks, threads and timers:

* a password check runs on the loop's default executor; a core coroutine (queue deletion, a
  transaction's durability) and each batch of confirmed publishes are awaited in tasks of
  their own, whose outcome goes back to the connection;
* output is gathered: the connection's ``wakeup`` schedules one flush on the next event-loop
  iteration, which writes all of ``data_to_send()`` at once (many deliveries become one
  ``send``);
* flow control, both ways: when the transport's write buffer passes its high-water mark we
  stop reading from the socket (a slow consumer cannot make us buffer without bound) and stop
  deliveries until ``resume_writing``; the connection asks to pause reading itself when
  unparsed input piles up or a resource alarm blocks it;
* timers run on the broker's clock (``broker.clock.call_later``): a handshake that does not
  reach Open-Ok within ``handshake_timeout`` is dropped; once open, a heartbeat frame goes out
  when nothing was written for half the interval, and the socket is dropped when nothing was
  received for two intervals; after our Connection.Close the client has a few seconds to send
  Close-Ok.

Figures and logs: a :class:`~wharf.server.logging_setup.ConnectionLog` writes one line when
the connection opens and one when it closes: info when the client closed it (Connection.Close
or end of stream), a warning with the reason otherwise (protocol error, missed heartbeats,
refused login, handshake timeout, operator close, server shutdown, reset), with the user,
vhost, client product, requests and bytes in and out.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, cast

from wharf.core.clock import TimerHandle
from wharf.errors import BrokerError, StorageError
from wharf.protocol.amqp.actions import (
    Action,
    AwaitCloseOk,
    AwaitCore,
    AwaitDurable,
    CheckPassword,
    CloseTransport,
    HandshakeComplete,
    PauseReading,
    ResumeReading,
    RunInBackground,
)
from wharf.protocol.amqp.connection import AMQPConnection
from wharf.protocol.amqp.errors import ReplyCode
from wharf.server.logging_setup import ConnectionLog

if TYPE_CHECKING:
    from wharf.server.amqp.listener import AMQPListener

__all__ = ["AMQPAdapter"]

log = logging.getLogger("wharf.amqp")

_WRITE_HIGH_WATER = 4 << 20
_WRITE_LOW_WATER = 1 << 20
CLOSE_OK_TIMEOUT_S = 5.0


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


class AMQPAdapter(asyncio.Protocol):
    """One client socket; see the module docstring."""

    def __init__(self, listener: AMQPListener) -> None:
        self._listener = listener
        self._clock = listener.broker.clock
        self._loop = asyncio.get_running_loop()
        self._transport: asyncio.Transport | None = None
        self._flush_scheduled = False
        self._reading_paused_by_conn = False
        self._writing_paused = False
        self._closing = False
        self._last_received = self._last_sent = self._clock.monotonic()
        self._heartbeat_s = 0
        self._handshake_timer: TimerHandle | None = None
        self._heartbeat_timer: TimerHandle | None = None
        self._close_ok_timer: TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.conn: AMQPConnection | None = None
        self._log: ConnectionLog | None = None
        self.bytes_in = 0
        self.bytes_out = 0

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
        listener = self._listener
        self.conn = AMQPConnection(
            listener.broker,
            peer=f"{host}:{peername[1]}",
            is_loopback=_is_loopback(host),
            settings=listener.amqp_settings,
            request_stats=listener.broker.stats.request_timer("amqp"),
            wakeup=self._schedule_flush,
        )
        self.conn.alarm = listener.alarm.reason if listener.alarm else None
        listener.connections.add(self)
        self._handshake_timer = self._clock.call_later(
            listener.amqp_settings.handshake_timeout, self._handshake_expired
        )

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
        self._last_received = self._clock.monotonic()
        conn = self.conn
        if conn is not None:
            actions = conn.receive_data(data)
            if actions:
                self._carry_out(actions)

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._listener.forget(self)
        self._stop_timers()
        for task in self._tasks:
            task.cancel()
        conn = self.conn
        if conn is not None:
            self._carry_out(conn.connection_lost())
        if self._log is not None:
            reason = conn.close_reason if conn is not None else None
            if conn is not None and conn.client_closed:
                self._log.closed(details=self._figures())
            elif reason is not None:
                self._log.closed(reason, details=self._figures())
            else:  # the client went away without Connection.Close: info on EOF, else a warning
                self._log.closed("connection lost" if exc else None, exc, details=self._figures())

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

    # -- the connection's actions -------------------------------------------------------------

    def _carry_out(self, actions: Sequence[Action]) -> None:
        conn = self.conn
        assert conn is not None
        for action in actions:
            if type(action) is AwaitDurable:
                self._spawn(self._await_durable(conn, action))
            elif type(action) is AwaitCore:
                self._spawn(self._await_core(conn, action))
            elif type(action) is CheckPassword:
                self._spawn(self._check_password(conn, action))
            elif type(action) is RunInBackground:
                self._listener.run_in_background(action.awaitable)
            elif type(action) is HandshakeComplete:
                self._cancel_handshake_timer()
                self._heartbeat_s = action.heartbeat_s
                if action.heartbeat_s:
                    self._schedule_heartbeat()
            elif type(action) is AwaitCloseOk:
                self._stop_timers()
                self._close_ok_timer = self._clock.call_later(
                    CLOSE_OK_TIMEOUT_S, self._close_ok_expired
                )
            elif type(action) is PauseReading:
                self._reading_paused_by_conn = True
                self._update_reading()
            elif type(action) is ResumeReading:
                self._reading_paused_by_conn = False
                self._update_reading()
            else:
                assert type(action) is CloseTransport
                self.close()

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = self._loop.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("amqp %s: internal error", self.id, exc_info=task.exception())
            self.abort("internal error")

    async def _check_password(self, conn: AMQPConnection, action: CheckPassword) -> None:
        try:
            ok = await self._loop.run_in_executor(None, action.check)
        except Exception as exc:
            self._carry_out(conn.wait_failed(exc))
            return
        self._carry_out(conn.wait_done(ok))

    async def _await_core(self, conn: AMQPConnection, action: AwaitCore) -> None:
        try:
            result = await action.awaitable
        except Exception as exc:
            self._carry_out(conn.wait_failed(exc))
            return
        self._carry_out(conn.wait_done(result))

    async def _await_durable(self, conn: AMQPConnection, batch: AwaitDurable) -> None:
        failed: list[int] = []
        for index, result in enumerate(batch.results):
            if result is not None:
                try:
                    await result.wait_durable()
                except (StorageError, BrokerError):
                    failed.append(index)  # could not be stored (disk full, ...): a nack
        self._carry_out(conn.durable(batch, failed))

    # -- output -------------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        conn, transport = self.conn, self._transport
        if conn is None:
            return
        data = conn.data_to_send()
        if not data or transport is None or transport.is_closing():
            return
        self._last_sent = self._clock.monotonic()
        self.bytes_out += len(data)
        transport.write(data)

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        if self._reading_paused_by_conn or self._writing_paused:
            if transport.is_reading():
                transport.pause_reading()
        elif not transport.is_reading():
            transport.resume_reading()

    # -- timers -------------------------------------------------------------------------------

    def _handshake_expired(self) -> None:
        self._handshake_timer = None
        self._time_out("handshake not finished in time")

    def _close_ok_expired(self) -> None:
        self._close_ok_timer = None
        conn = self.conn
        reason = conn.close_reason if conn is not None else None
        self._time_out(f"{reason or 'closing'}; no Close-Ok from the client")

    def _schedule_heartbeat(self) -> None:
        period = max(0.5, min(self._heartbeat_s / 2, 5.0))
        self._heartbeat_timer = self._clock.call_later(period, self._heartbeat_tick)

    def _heartbeat_tick(self) -> None:
        self._heartbeat_timer = None
        conn = self.conn
        if conn is None or conn.closed:
            return
        interval = self._heartbeat_s
        now = self._clock.monotonic()
        if now - self._last_received > 2 * interval:
            # The client is presumed gone; like RabbitMQ, just drop the socket.
            self._time_out(f"missed heartbeats from client, timeout: {interval}s")
            return
        if now - self._last_sent >= interval / 2:
            conn.heartbeat_due()
        self._schedule_heartbeat()

    def _time_out(self, reason: str) -> None:
        conn = self.conn
        if conn is None or conn.closed:
            return
        self._carry_out(conn.timed_out(reason))
        self._abort_transport()

    def _cancel_handshake_timer(self) -> None:
        if self._handshake_timer is not None:
            self._handshake_timer.cancel()
            self._handshake_timer = None

    def _stop_timers(self) -> None:
        self._cancel_handshake_timer()
        for timer in (self._heartbeat_timer, self._close_ok_timer):
            if timer is not None:
                timer.cancel()
        self._heartbeat_timer = self._close_ok_timer = None

    # -- closing ------------------------------------------------------------------------------

    def close(self) -> None:
        """Send what is pending, then close the socket."""
        if self._closing:
            return
        self._closing = True
        self._stop_timers()
        self._flush()
        if self._transport is not None:
            self._transport.close()

    def close_from_server(self, text: str) -> None:
        """Send Connection.Close (320 CONNECTION_FORCED) with ``text``: server shutdown, or
        an operator closing the connection."""
        conn = self.conn
        if conn is not None and not conn.closed:
            self._carry_out(conn.close_from_server(ReplyCode.CONNECTION_FORCED, text))

    def set_alarm(self, reason: str | None) -> None:
        """The listener's resource alarm was raised (``reason``) or cleared (None)."""
        conn = self.conn
        if conn is not None and not conn.closed:
            self._carry_out(conn.set_alarm(reason))

    def abort(self, reason: str) -> None:
        """Drop the socket at once (``reason`` is logged unless one is known already)."""
        conn = self.conn
        if conn is not None and not conn.closed:
            self._carry_out(conn.timed_out(conn.close_reason or reason))
        self._abort_transport()

    def _abort_transport(self) -> None:
        self._stop_timers()
        if self._transport is not None:
            self._transport.abort()
