"""One AMQP 0-9-1 connection: handshake, channels, heartbeats bookkeeping, error mapping.

How it works
------------
The server adapter feeds received bytes to :meth:`AMQPConnection.receive_data` and runs
:meth:`AMQPConnection.run` as one task; outgoing bytes go to the :class:`Transport` it was given
(this module never touches a socket). ``run`` takes one frame at a time from the
:class:`~wharf.protocol.amqp.frames.FrameReader` and dispatches it:

* channel 0 carries the connection class; its order is checked by the table in
  :mod:`wharf.protocol.amqp.state` (Start/Start-Ok, Tune/Tune-Ok, Open/Open-Ok, Close/Close-Ok);
* other channels are :class:`~wharf.protocol.amqp.channel.Channel` objects, which run the
  exchange, queue, basic, confirm and tx methods against the broker core.

:meth:`AMQPConnection._handle_error` is the one place that turns an exception into a wire
response: channel-scoped reply codes close that channel with Channel.Close, every other code
(and any unexpected exception, as 541 INTERNAL_ERROR) closes the connection.

Figures: ``requests`` counts the method frames received (Basic.Publish included). With a
``request_stats`` observer, every synchronous method (one the client waits on: Channel.Open,
Queue.Declare, Basic.Get, ...) and Connection.Start-Ok is timed from its decoding to its reply
written, and publishes on a channel in confirm mode are timed up to their confirm (see
:mod:`wharf.protocol.amqp.confirms`); other methods (Basic.Ack, publishes without confirms)
are counted but not timed. ``client_closed`` tells a close the client asked for (Connection.Close
before any error of ours) from one the broker decided (``close_reason``).
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from time import perf_counter
from typing import Any, Protocol

from pamqp import base, commands

from wharf.core.broker import Broker
from wharf.errors import AccessRefusedError, BrokerError, StorageError, WharfError
from wharf.protocol.amqp.auth import MECHANISMS, parse_credentials
from wharf.protocol.amqp.channel import MAX_BODY_SIZE, Channel
from wharf.protocol.amqp.errors import (
    CHANNEL_SCOPED,
    AMQPChannelError,
    AMQPConnectionError,
    AMQPError,
    BadProtocolHeader,
    ReplyCode,
    broker_error_reply,
)
from wharf.protocol.amqp.frames import (
    FRAME_MIN_SIZE,
    NEED_DATA,
    ContentBodyFrame,
    ContentHeaderFrame,
    FrameReader,
    FrameWriter,
    HeartbeatFrame,
    MethodFrame,
    ProtocolHeaderReceived,
    PublishFrame,
)
from wharf.protocol.amqp.state import (
    DISCARDING_STATES,
    ChannelInput,
    ChannelState,
    ConnInput,
    ConnState,
    channel_transition,
    connection_transition,
)
from wharf.protocol.amqp.timing import RequestObserver

__all__ = ["AMQPConnection", "AMQPSettings", "Transport"]

log = logging.getLogger(__name__)

_VERSION = importlib.metadata.version("wharf")

#: Tasks deleting exclusive queues of closed connections (kept referenced until done).
_background: set[asyncio.Task[None]] = set()

_START_OK = commands.Connection.StartOk

#: The frames of a published message (a tuple: ``isinstance`` with it costs a third of
#: building the ``A | B | C`` union again for every frame).
_CONTENT_FRAMES = (ContentBodyFrame, ContentHeaderFrame, PublishFrame)

#: Unparsed input we keep at most before asking the adapter to stop reading.
_MAX_BUFFERED_FACTOR = 4


class Transport(Protocol):
    """What the connection needs from the server adapter."""

    def write(self, data: bytes) -> None:
        """Queue ``data`` for sending, in order."""

    def close(self) -> None:
        """Flush queued data, then close the socket."""

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...


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
        }
    )


class AMQPConnection:
    """The protocol side of one client connection (see the module docstring)."""

    def __init__(
        self,
        broker: Broker,
        transport: Transport,
        *,
        peer: str,
        is_loopback: bool,
        settings: AMQPSettings | None = None,
        request_stats: RequestObserver | None = None,
    ) -> None:
        self.broker = broker
        self.request_stats = request_stats
        self.requests = 0
        self.client_closed = False
        self.transport = transport
        self.peer = peer
        self.is_loopback = is_loopback
        self.settings = settings or AMQPSettings()
        self.state = ConnState.AWAIT_HEADER
        # Before Tune-Ok a peer may send frames up to our proposal (Start-Ok can be large).
        self.reader = FrameReader(frame_max=self.settings.frame_max)
        self.writer = FrameWriter(frame_max=FRAME_MIN_SIZE)
        self.channels: dict[int, Channel] = {}
        self.channel_max = self.settings.channel_max
        self.heartbeat = 0
        self.username = ""
        self.vhost_name = "/"
        self.client_properties: dict[str, Any] = {}
        self.close_reason: str | None = None
        self.writable = True
        self._data = asyncio.Event()
        self._paused = False  # too much unparsed input
        self._blocked = False  # resource alarm and this connection publishes
        self.alarm: str | None = None  # the broker's resource alarm, if one is raised
        self._closed = False
        self._handlers: dict[type[base.Frame], Callable[[Any], Awaitable[None]]] = {
            commands.Connection.StartOk: self._on_start_ok,
            commands.Connection.TuneOk: self._on_tune_ok,
            commands.Connection.Open: self._on_open,
            commands.Connection.Close: self._on_close,
            commands.Connection.CloseOk: self._on_close_ok,
        }

    # -- input ---------------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Buffer bytes from the socket; asks the transport to pause if too much piles up."""
        if self._closed:
            return
        self.reader.receive_data(data)
        self._data.set()
        if not self._paused and self.reader.buffered > _MAX_BUFFERED_FACTOR * self.reader.frame_max:
            self._paused = True
            if not self._blocked:
                self.transport.pause_reading()

    def set_writable(self, writable: bool) -> None:
        """Flow control from the adapter: stop deliveries while the client is not reading."""
        self.writable = writable
        if writable:
            for channel in list(self.channels.values()):
                channel.resume_deliveries()

    @property
    def client_capabilities(self) -> dict[str, Any]:
        caps = self.client_properties.get("capabilities")
        return caps if isinstance(caps, dict) else {}

    async def run(self) -> None:
        """Process frames until the connection is closed; never raises for protocol errors."""
        try:
            while not self._closed:
                try:
                    event = self.reader.next_event()
                except AMQPError as exc:
                    # The byte stream cannot be parsed any further: say why, then hang up.
                    self._handle_error(exc, 0)
                    self._shutdown()
                    return
                if event is NEED_DATA:
                    if self._paused:
                        self._paused = False
                        if not self._blocked:
                            self.transport.resume_reading()
                    self._data.clear()
                    await self._data.wait()
                    continue
                try:
                    if isinstance(event, _CONTENT_FRAMES):
                        self._content_frame(event)
                    else:
                        await self._dispatch(event)
                except Exception as exc:  # a bug: report 541 and close rather than hang
                    log.exception("amqp %s: internal error", self.peer)
                    self._handle_error(exc, 0)
                    self._shutdown()
                    return
        finally:
            self.connection_lost()

    def set_alarm(self, reason: str | None) -> None:
        """A resource alarm was raised (``reason``) or cleared (None) by the server.

        As in RabbitMQ, a connection is blocked only once it publishes while the alarm is on:
        it gets Connection.Blocked (if it advertised ``connection.blocked``) and the broker
        stops reading from it; consumers keep draining queues. Clearing the alarm unblocks it.
        """
        self.alarm = reason
        if reason is None and self._blocked:
            self._blocked = False
            if self.blocked_notifications:
                self._send_method(0, commands.Connection.Unblocked())
            if not self._paused:
                self.transport.resume_reading()

    @property
    def blocked_notifications(self) -> bool:
        return bool(self.client_capabilities.get("connection.blocked"))

    def _block(self) -> None:
        self._blocked = True
        log.info("amqp %s: blocked: %s", self.peer, self.alarm)
        if self.blocked_notifications:
            self._send_method(0, commands.Connection.Blocked(reason=self.alarm or ""))
        if not self._paused:
            self.transport.pause_reading()

    def _content_frame(self, event: PublishFrame | ContentHeaderFrame | ContentBodyFrame) -> None:
        """The hot path: frames of a published message, handled without awaiting."""
        if self.alarm is not None and not self._blocked and self.state is ConnState.OPEN:
            self._block()
        number = event.channel
        channel = self.channels.get(number)
        if channel is None or channel.state is not ChannelState.OPEN:
            if self.state in DISCARDING_STATES or (
                channel is not None and channel.state is ChannelState.CLOSING
            ):
                return
            error = AMQPConnectionError(
                ReplyCode.CHANNEL_ERROR if self.state is ConnState.OPEN else (
                    ReplyCode.COMMAND_INVALID
                ),
                f"content frame on channel {number}, which is not open",
            )
            self._handle_error(error, 0)
            return
        try:
            channel.content(event)
            if type(event) is PublishFrame:
                self.requests += 1
                content = self.reader.read_content(number, MAX_BODY_SIZE)
                if content is not None:
                    channel.whole_content(*content)
        except (WharfError, AMQPError) as exc:
            self._handle_error(exc, number)

    async def _dispatch(self, event: object) -> None:
        if isinstance(event, MethodFrame):
            self.requests += 1
            stats = self.request_stats
            method = event.method
            if stats is None or not (method.synchronous or type(method) is _START_OK):
                await self._method(event)
                return
            started = perf_counter()
            await self._method(event)
            stats.observe(method.name, perf_counter() - started)
        elif isinstance(event, HeartbeatFrame):
            return
        elif isinstance(event, ProtocolHeaderReceived):
            self._start()

    async def _method(self, event: MethodFrame) -> None:
        if event.channel == 0:
            await self._connection_method(event.method)
        else:
            await self._channel_frame(event.channel, event)

    # -- connection class ----------------------------------------------------------------------

    def _start(self) -> None:
        self.state = connection_transition(self.state, ConnInput.PROTOCOL_HEADER)
        self._send_method(
            0,
            commands.Connection.Start(
                version_major=0,
                version_minor=9,
                server_properties={
                    "product": self.settings.product,
                    "version": _VERSION,
                    "platform": "Python",
                    "information": "Wharf: queues (AMQP 0-9-1) and streams (Kafka) in one broker",
                    "capabilities": self.settings.capabilities,
                },
                mechanisms=MECHANISMS,
                locales="en_US",
            ),
        )

    async def _connection_method(self, method: base.Frame) -> None:
        if self.state in DISCARDING_STATES and not isinstance(
            method, commands.Connection.Close | commands.Connection.CloseOk
        ):
            return
        handler = self._handlers.get(type(method))
        if handler is None:
            code = ReplyCode.COMMAND_INVALID if self.state is not ConnState.OPEN else (
                ReplyCode.UNEXPECTED_FRAME
            )
            raise_text = f"{method.name} is not valid on channel 0"
            self._handle_error(AMQPConnectionError(code, raise_text), 0)
            return
        try:
            await handler(method)
        except (WharfError, AMQPError) as exc:
            self._handle_error(exc, 0)

    async def _on_start_ok(self, method: commands.Connection.StartOk) -> None:
        self.state = connection_transition(self.state, ConnInput.START_OK)
        self.client_properties = dict(method.client_properties or {})
        username, password = parse_credentials(method.mechanism, method.response)
        if not await self._authenticate(username, password):
            self.close_reason = f"authentication failed for user {username!r}"
            self.send_connection_close(
                ReplyCode.ACCESS_REFUSED,
                f"ACCESS_REFUSED - Login was refused using authentication mechanism "
                f"{method.mechanism}",
            )
            return
        self.username = username
        self._send_method(
            0,
            commands.Connection.Tune(
                channel_max=self.settings.channel_max,
                frame_max=self.settings.frame_max,
                heartbeat=self.settings.heartbeat,
            ),
        )

    async def _authenticate(self, username: str, password: str) -> bool:
        # Like RabbitMQ, guest is a loopback-only user: the user store refuses it from elsewhere.
        # The password hash takes milliseconds of CPU: run it off the event loop.
        users = self.broker.vhosts.users
        check = partial(users.authenticate, username, password, loopback=self.is_loopback)
        try:
            await asyncio.get_running_loop().run_in_executor(None, check)
        except AccessRefusedError:
            return False
        return True

    async def _on_tune_ok(self, method: commands.Connection.TuneOk) -> None:
        self.state = connection_transition(self.state, ConnInput.TUNE_OK)
        ours = self.settings
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
        self.reader.frame_max = frame_max
        self.writer.frame_max = frame_max
        self.channel_max = channel_max
        self.heartbeat = method.heartbeat

    async def _on_open(self, method: commands.Connection.Open) -> None:
        self.state = connection_transition(self.state, ConnInput.OPEN)
        name = method.virtual_host or "/"
        if name not in self.broker.vhosts:
            raise AMQPConnectionError(ReplyCode.NOT_ALLOWED, f"vhost '{name}' not found")
        if not self.broker.vhosts.users.can_access_vhost(self.username, name):
            raise AMQPConnectionError(
                ReplyCode.NOT_ALLOWED,
                f"access to vhost '{name}' refused for user '{self.username}'",
            )
        self.vhost_name = name
        self._send_method(0, commands.Connection.OpenOk())

    async def _on_close(self, method: commands.Connection.Close) -> None:
        self.state = connection_transition(self.state, ConnInput.CLOSE)
        if self.close_reason is None:
            self.client_closed = True
            self.close_reason = (
                f"client closed: {method.reply_code} {method.reply_text}".rstrip()
            )
        self._send_method(0, commands.Connection.CloseOk())
        self._shutdown()

    async def _on_close_ok(self, _method: commands.Connection.CloseOk) -> None:
        self.state = connection_transition(self.state, ConnInput.CLOSE_OK)
        self._shutdown()

    def send_connection_close(
        self, code: ReplyCode, text: str, class_id: int = 0, method_id: int = 0
    ) -> None:
        """Start the closing handshake (or just hang up if it cannot be understood)."""
        if self.state in DISCARDING_STATES:
            return
        if self.state is ConnState.AWAIT_HEADER:
            self._shutdown()
            return
        self.state = connection_transition(self.state, ConnInput.SEND_CLOSE)
        self._send_method(
            0,
            commands.Connection.Close(
                reply_code=int(code),
                reply_text=text[:255],
                class_id=class_id,
                method_id=method_id,
            ),
        )
        self._release_channels()
        # Do not wait for ever for Close-Ok: the adapter closes the socket after a grace period.

    # -- channels ------------------------------------------------------------------------------

    async def _channel_frame(self, number: int, event: MethodFrame) -> None:
        if self.state is not ConnState.OPEN:
            if self.state in DISCARDING_STATES:
                return
            self._handle_error(
                AMQPConnectionError(
                    ReplyCode.COMMAND_INVALID, f"channel {number} used before Connection.Open"
                ),
                0,
            )
            return
        method = event.method
        channel = self.channels.get(number)
        try:
            if channel is None:
                if isinstance(method, commands.Channel.Open):
                    self._open_channel(number)
                    return
                raise AMQPConnectionError(
                    ReplyCode.CHANNEL_ERROR, f"channel {number} is not open"
                )
            if isinstance(method, commands.Channel.Close):
                channel.state = channel_transition(channel.state, ChannelInput.CLOSE)
                self._drop_channel(number)
                self._send_method(number, commands.Channel.CloseOk())
                return
            if isinstance(method, commands.Channel.CloseOk):
                channel.state = channel_transition(channel.state, ChannelInput.CLOSE_OK)
                self._drop_channel(number)
                return
            if channel.state is ChannelState.CLOSING:
                return  # discard everything until Close-Ok
            if isinstance(method, commands.Channel.Open):
                raise AMQPConnectionError(
                    ReplyCode.CHANNEL_ERROR, f"channel {number} is already open"
                )
            await channel.handle(event)
        except (WharfError, AMQPError) as exc:
            self._handle_error(exc, number)

    def _open_channel(self, number: int) -> None:
        if number > self.channel_max:
            raise AMQPConnectionError(
                ReplyCode.CHANNEL_ERROR,
                f"channel {number} is above channel_max {self.channel_max}",
            )
        self.channels[number] = Channel(self, number)
        self._send_method(number, commands.Channel.OpenOk())

    def _drop_channel(self, number: int) -> None:
        channel = self.channels.pop(number, None)
        if channel is not None:
            channel.release_now()

    def _release_exclusive_queues(self) -> None:
        """Exclusive queues die with the connection that declared them (the owner is us)."""
        if self.state is ConnState.AWAIT_HEADER or self.vhost_name not in self.broker.vhosts:
            return
        vhost = self.broker.vhosts[self.vhost_name]
        if any(q.exclusive_owner is self for q in vhost.queues.values()):
            task = asyncio.get_running_loop().create_task(vhost.connection_closed(self))
            _background.add(task)
            task.add_done_callback(_background.discard)

    def _release_channels(self) -> None:
        channels, self.channels = self.channels, {}
        for channel in channels.values():
            channel.release_now()

    # -- errors --------------------------------------------------------------------------------

    def _handle_error(self, exc: BaseException, channel_number: int) -> None:
        """The one place where an exception becomes a wire response."""
        if isinstance(exc, BadProtocolHeader):
            self.close_reason = str(exc)
            self.transport.write(FrameWriter.protocol_header())
            self._shutdown()
            return
        if isinstance(exc, AMQPError):
            code, text = exc.reply_code, exc.reply_text
            class_id, method_id = exc.class_id, exc.method_id
            channel_scoped = isinstance(exc, AMQPChannelError) or not exc.closes_connection
        elif isinstance(exc, BrokerError):
            code, text = broker_error_reply(exc)
            class_id = method_id = 0
            channel_scoped = code in CHANNEL_SCOPED
        elif isinstance(exc, StorageError):
            code, text = ReplyCode.INTERNAL_ERROR, f"storage failure: {exc}"
            class_id = method_id = 0
            channel_scoped = False
        else:
            code, text = ReplyCode.INTERNAL_ERROR, f"internal error: {exc!r}"
            class_id = method_id = 0
            channel_scoped = False
        text = f"{code.name} - {text}"
        channel = self.channels.get(channel_number)
        if channel_scoped and channel is not None:
            log.info("amqp %s: closing channel %d: %s", self.peer, channel_number, text)
            channel.state = channel_transition(channel.state, ChannelInput.SEND_CLOSE)
            channel.release_now()
            self._send_method(
                channel_number,
                commands.Channel.Close(
                    reply_code=int(code), reply_text=text[:255], class_id=class_id,
                    method_id=method_id,
                ),
            )
            return
        self.close_reason = text
        log.info("amqp %s: closing connection: %s", self.peer, text)
        self.send_connection_close(code, text, class_id, method_id)

    # -- output and lifecycle ------------------------------------------------------------------

    def _send_method(self, channel: int, method: base.Frame) -> None:
        self.transport.write(self.writer.method(channel, method))

    def send_method(self, channel: int, method: base.Frame) -> None:
        if not self._closed:
            self._send_method(channel, method)

    def send_raw(self, data: bytes) -> None:
        if not self._closed:
            self.transport.write(data)

    def close_from_server(self, code: ReplyCode, text: str) -> None:
        """Close initiated by the server (shutdown, missed heartbeats handled by the adapter)."""
        if self.close_reason is None:
            self.close_reason = f"{code.name} - {text}"
        self.send_connection_close(code, f"{code.name} - {text}")

    @property
    def closed(self) -> bool:
        return self._closed

    def _shutdown(self) -> None:
        if self._closed:
            return
        self._release_channels()
        self._closed = True
        self._data.set()
        self.transport.close()

    def connection_lost(self) -> None:
        """The socket is gone (or we closed it): give back everything this connection held."""
        self._release_channels()
        if not self._closed:
            self._closed = True
            self._data.set()
        self._release_exclusive_queues()
