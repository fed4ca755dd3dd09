"""The AMQP 0-9-1 connection class: the methods of channel 0, from the protocol header to Close.

How it works
------------
:class:`ConnectionMethods` is one half of an
:class:`~wharf.protocol.amqp.connection.AMQPConnection` (the other half, the connection
module, keeps the frame loop, the channel table, waits and output). The connection calls
:meth:`~ConnectionMethods.start` when the protocol header arrives and
:meth:`~ConnectionMethods.handle` for every method frame on channel 0; an error raised here
becomes a wire response in the connection's one error handler, as for channels.

* Start/Start-Ok: we announce the server properties and our SASL mechanisms
  (:mod:`wharf.protocol.amqp.auth`); Start-Ok's password is checked by the user store on the
  adapter's worker thread (the connection waits on a
  :class:`~wharf.protocol.amqp.actions.CheckPassword`); a refused login gets Connection.Close
  403 ACCESS_REFUSED. Secure is never sent: both mechanisms carry the password in Start-Ok.
* Tune/Tune-Ok: we propose :class:`AMQPSettings`; the client may lower frame_max and
  channel_max, never raise them.
* Open/Open-Ok: the vhost must exist and the user must have access to it; Open-Ok hands the
  adapter a :class:`~wharf.protocol.amqp.actions.HandshakeComplete` (heartbeats start).
* Close/Close-Ok from the client end the connection.
* Blocked/Unblocked: sent on the resource alarm, to clients that advertise
  ``connection.blocked`` (see :meth:`~wharf.protocol.amqp.connection.AMQPConnection.set_alarm`).

The order of these methods is checked by the table in :mod:`wharf.protocol.amqp.state`. All
the state they negotiate (user, vhost, frame_max, heartbeat) lives on the connection, which
channels and the adapter read.
"""

from __future__ import annotations

import importlib.metadata
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from pamqp import base, commands

from wharf.errors import AccessRefusedError
from wharf.protocol.amqp.actions import CheckPassword, HandshakeComplete
from wharf.protocol.amqp.auth import MECHANISMS, parse_credentials
from wharf.protocol.amqp.errors import AMQPConnectionError, ReplyCode
from wharf.protocol.amqp.frames import FRAME_MIN_SIZE
from wharf.protocol.amqp.state import (
    DISCARDING_STATES,
    ConnInput,
    ConnState,
    connection_transition,
)

if TYPE_CHECKING:
    from wharf.protocol.amqp.connection import AMQPConnection

__all__ = ["AMQPSettings", "ConnectionMethods"]

log = logging.getLogger(__name__)

_VERSION = importlib.metadata.version("wharf")


@dataclass(slots=True)
class AMQPSettings:
    """What the broker proposes in Connection.Tune and announces in Connection.Start."""

    channel_max: int = 2047
    frame_max: int = 131072
    heartbeat: int = 60  # seconds; 0 disables heartbeats
    handshake_timeout: float = 10.0  # seconds from accept to Open-Ok
    product: str = "Wharf"
    capabilities: dict[str, Any] = field(
        default_factory=lambda: {
            "publisher_confirms": True,
            "exchange_exchange_bindings": True,
            "basic.nack": True,
            "consumer_cancel_notify": True,
            "authentication_failure_close": True,
            "per_consumer_qos": True,
            "connection.blocked": True,
            "consumer_priorities": True,
            "direct_reply_to": True,
        }
    )


class ConnectionMethods:
    """The connection class of one connection (see the module docstring)."""

    def __init__(self, conn: AMQPConnection) -> None:
        self.conn = conn
        self._handlers: dict[type[base.Frame], Callable[[Any], None]] = {
            commands.Connection.StartOk: self._start_ok,
            commands.Connection.TuneOk: self._tune_ok,
            commands.Connection.Open: self._open,
            commands.Connection.Close: self._close,
            commands.Connection.CloseOk: self._close_ok,
            commands.Connection.UpdateSecret: self._update_secret,
        }

    def start(self) -> None:
        """The protocol header arrived: announce ourselves with Connection.Start."""
        conn = self.conn
        conn.state = connection_transition(conn.state, ConnInput.PROTOCOL_HEADER)
        capabilities = conn.settings.capabilities
        conn.send_method(
            0,
            commands.Connection.Start(
                version_major=0,
                version_minor=9,
                server_properties={
                    "product": conn.settings.product,
                    "version": _VERSION,
                    "platform": "Python",
                    "information": "Wharf: queues (AMQP 0-9-1) and streams (Kafka) in one broker",
                    "capabilities": capabilities,
                },
                mechanisms=MECHANISMS,
                locales="en_US",
            ),
        )

    def handle(self, method: base.Frame) -> None:
        """A method frame on channel 0; raises the error to answer, if any."""
        state = self.conn.state
        if state in DISCARDING_STATES and not isinstance(
            method, commands.Connection.Close | commands.Connection.CloseOk
        ):
            return
        handler = self._handlers.get(type(method))
        if handler is None:
            code = ReplyCode.COMMAND_INVALID if state is not ConnState.OPEN else (
                ReplyCode.UNEXPECTED_FRAME
            )
            raise AMQPConnectionError(code, f"{method.name} is not valid on channel 0")
        handler(method)

    def block(self) -> None:
        """The connection published while the resource alarm is on: stop reading from it."""
        conn = self.conn
        conn.blocked = True
        log.info("amqp %s: blocked: %s", conn.peer, conn.alarm)
        if conn.blocked_notifications:
            conn.send_method(0, commands.Connection.Blocked(reason=conn.alarm or ""))

    def unblock(self) -> None:
        """The resource alarm cleared: read from a blocked connection again."""
        conn = self.conn
        conn.blocked = False
        if conn.blocked_notifications:
            conn.send_method(0, commands.Connection.Unblocked())

    def _start_ok(self, method: commands.Connection.StartOk) -> None:
        conn = self.conn
        conn.state = connection_transition(conn.state, ConnInput.START_OK)
        conn.client_properties = dict(method.client_properties or {})
        username, password = parse_credentials(method.mechanism, method.response)
        # Like RabbitMQ, guest is a loopback-only user: the user store refuses it from elsewhere.
        # The password hash takes milliseconds of CPU: the adapter runs it off the event loop.
        users = conn.broker.users
        loopback = conn.is_loopback

        def check() -> bool:
            try:
                users.authenticate(username, password, loopback=loopback)
            except AccessRefusedError:
                return False
            return True

        conn.wait_on(CheckPassword(check), partial(self._authenticated, username, method.mechanism))

    def _authenticated(self, username: str, mechanism: str, ok: object) -> None:
        conn = self.conn
        if not ok:
            conn.close_reason = f"authentication failed for user {username!r}"
            conn.send_connection_close(
                ReplyCode.ACCESS_REFUSED,
                f"ACCESS_REFUSED - Login was refused using authentication mechanism {mechanism}",
            )
            return
        conn.username = username
        conn.send_method(
            0,
            commands.Connection.Tune(
                channel_max=conn.settings.channel_max,
                frame_max=conn.settings.frame_max,
                heartbeat=conn.settings.heartbeat,
            ),
        )

    def _tune_ok(self, method: commands.Connection.TuneOk) -> None:
        conn = self.conn
        conn.state = connection_transition(conn.state, ConnInput.TUNE_OK)
        ours = conn.settings
        frame_max = method.frame_max or ours.frame_max
        if frame_max < FRAME_MIN_SIZE or frame_max > ours.frame_max:
            raise AMQPConnectionError(
                ReplyCode.NOT_ALLOWED,
                f"frame_max {method.frame_max} outside [{FRAME_MIN_SIZE}, {ours.frame_max}]",
            )
        channel_max = method.channel_max or ours.channel_max
        if channel_max > ours.channel_max:
            raise AMQPConnectionError(
                ReplyCode.NOT_ALLOWED,
                f"channel_max {channel_max} above the {ours.channel_max} offered",
            )
        conn.reader.frame_max = frame_max
        conn.writer.frame_max = frame_max
        conn.channel_max = channel_max
        conn.heartbeat = method.heartbeat

    def _open(self, method: commands.Connection.Open) -> None:
        conn = self.conn
        conn.state = connection_transition(conn.state, ConnInput.OPEN)
        name = method.virtual_host or "/"
        if name not in conn.broker.vhosts:
            raise AMQPConnectionError(ReplyCode.NOT_ALLOWED, f"vhost '{name}' not found")
        if not conn.broker.users.can_access_vhost(conn.username, name):
            raise AMQPConnectionError(
                ReplyCode.NOT_ALLOWED,
                f"access to vhost '{name}' refused for user '{conn.username}'",
            )
        conn.vhost_name = name
        conn.send_method(0, commands.Connection.OpenOk())
        conn.hand_out(HandshakeComplete(conn.heartbeat))

    def _close(self, method: commands.Connection.Close) -> None:
        conn = self.conn
        conn.state = connection_transition(conn.state, ConnInput.CLOSE)
        if conn.close_reason is None:
            conn.client_closed = True
            conn.close_reason = (
                f"client closed: {method.reply_code} {method.reply_text}".rstrip()
            )
        conn.send_method(0, commands.Connection.CloseOk())
        conn.shutdown()

    def _update_secret(self, _method: commands.Connection.UpdateSecret) -> None:
        """RabbitMQ's extension for refreshing expiring credentials (OAuth tokens). Wharf's
        logins do not expire, so, as RabbitMQ's internal user store does, the connection keeps
        the identity it opened with and the client gets update-secret-ok."""
        conn = self.conn
        if conn.state is not ConnState.OPEN:
            raise AMQPConnectionError(
                ReplyCode.UNEXPECTED_FRAME, "Connection.UpdateSecret before Connection.Open-Ok"
            )
        conn.send_method(0, commands.Connection.UpdateSecretOk())

    def _close_ok(self, _method: commands.Connection.CloseOk) -> None:
        conn = self.conn
        conn.state = connection_transition(conn.state, ConnInput.CLOSE_OK)
        conn.shutdown()
