"""One AMQP 0-9-1 connection, sans I/O: bytes in, bytes and actions out.

How it works
------------
The server adapter feeds received bytes to :meth:`AMQPConnection.receive_data`, which works
through every complete frame at once (the :class:`~wharf.protocol.amqp.frames.FrameReader`
keeps the rest) and returns the :mod:`actions <wharf.protocol.amqp.actions>` the adapter must
carry out: check a password on a worker thread, await a coroutine of the broker core, wait for
published messages to be stored, start or stop timers, pause reading, close the socket. The
bytes to send accumulate until the adapter collects them with
:meth:`~AMQPConnection.data_to_send`; the ``wakeup`` callback tells it when there are some
(deliveries pushed by a queue, for one, arrive between two reads). This module never touches
a socket, a timer, a thread or an event loop; its calls into the broker core are synchronous.

Frames are dispatched one by one:

* channel 0 carries the connection class (Start/Start-Ok, Tune/Tune-Ok, Open/Open-Ok,
  Close/Close-Ok, Blocked/Unblocked), handled by
  :class:`~wharf.protocol.amqp.connection_methods.ConnectionMethods`, which writes what it
  negotiates (user, vhost, frame_max, heartbeat) onto this connection;
* other channels are :class:`~wharf.protocol.amqp.channel.Channel` objects, which run the
  exchange, queue, basic, confirm and tx methods against the broker core; content frames of a
  published message go straight to the channel's
  :class:`~wharf.protocol.amqp.publishing.Publishing` (the hot path).

A method that needs the adapter (Start-Ok's password check, a core coroutine) leaves a *wait*:
no further frame is read until the adapter reports its outcome with
:meth:`~AMQPConnection.wait_done` or :meth:`~AMQPConnection.wait_failed`, which runs the
method's continuation and goes on with the buffered frames. Publisher confirms do not hold
frames up: after each input the channels' new publishes leave as one
:class:`~wharf.protocol.amqp.actions.AwaitDurable` per channel, and
:meth:`~AMQPConnection.durable` brings back their outcome.

:meth:`AMQPConnection._handle_error` is the one place that turns an exception into a wire
response: channel-scoped reply codes close that channel with Channel.Close, every other code
(and any unexpected exception, as 541 INTERNAL_ERROR) closes the connection.

Figures: ``requests`` counts the method frames received (Basic.Publish included). With a
``request_stats`` observer, every synchronous method (one the client waits on: Channel.Open,
Queue.Declare, Basic.Get, ...) and Connection.Start-Ok is timed from its decoding to its reply
(after its wait, if it has one), and publishes on a channel in confirm mode are timed up to
their confirm (see :mod:`wharf.protocol.amqp.confirms`); other methods (Basic.Ack, publishes
without confirms) are counted but not timed. ``client_closed`` tells a close the client asked
for (Connection.Close before any error of ours) from one the broker decided (``close_reason``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from time import perf_counter
from typing import Any

from pamqp import base, commands

from wharf.core.broker import Broker
from wharf.errors import BrokerError, StorageError, WharfError
from wharf.protocol.amqp.actions import (
    AWAIT_CLOSE_OK,
    CLOSE_TRANSPORT,
    PAUSE_READING,
    RESUME_READING,
    Action,
    AwaitCore,
    AwaitDurable,
    CheckPassword,
    RunInBackground,
)
from wharf.protocol.amqp.channel import Channel
from wharf.protocol.amqp.confirms import PublisherConfirms
from wharf.protocol.amqp.connection_methods import AMQPSettings, ConnectionMethods
from wharf.protocol.amqp.errors import (
    CHANNEL_SCOPED,
    AMQPChannelError,
    AMQPConnectionError,
    AMQPError,
    BadProtocolHeader,
    ReplyCode,
    broker_error_reply,
    with_method,
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
from wharf.protocol.amqp.publishing import MAX_BODY_SIZE
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

__all__ = ["AMQPConnection", "AMQPSettings"]

log = logging.getLogger(__name__)

_START_OK = commands.Connection.StartOk

#: The frames of a published message (a tuple: ``isinstance`` with it costs a third of
#: building the ``A | B | C`` union again for every frame).
_CONTENT_FRAMES = (ContentBodyFrame, ContentHeaderFrame, PublishFrame)

#: Unparsed input we keep at most (in frames of frame_max) before asking to stop reading.
_MAX_BUFFERED_FACTOR = 4

_NO_ACTIONS: Sequence[Action] = ()


@dataclass(slots=True, eq=False)
class _Wait:
    """A method waiting for the adapter: where it came from and what to do next."""

    channel: int
    method: base.Frame
    then: Callable[[Any], None]
    timed_since: float | None = None  # perf_counter() at decoding, when the method is timed


class AMQPConnection:
    """The protocol side of one client connection (see the module docstring)."""

    def __init__(
        self,
        broker: Broker,
        *,
        peer: str,
        is_loopback: bool,
        settings: AMQPSettings | None = None,
        request_stats: RequestObserver | None = None,
        wakeup: Callable[[], None] = lambda: None,
    ) -> None:
        self.broker = broker
        self.request_stats = request_stats
        self.requests = 0
        self.client_closed = False
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
        self.alarm: str | None = None  # the broker's resource alarm, if one is raised
        self._wakeup = wakeup
        self._out: list[bytes] = []
        self._signalled = False  # wakeup called since the last data_to_send
        self._actions: list[Action] = []
        self._wait: _Wait | None = None
        self._current: MethodFrame | None = None  # the method frame being dispatched
        self._open_batches: list[PublisherConfirms] = []  # publishes to hand out as actions
        self._confirms_ready: list[PublisherConfirms] = []  # confirms to flush with the output
        self._reading_paused = False
        self.blocked = False  # resource alarm and this connection publishes
        # the publish whose message was being read when the connection was blocked: reading
        # goes on until that message is whole (its frames may come in a later read)
        self._finishing: PublishFrame | None = None
        self._closed = False
        self._released = False  # exclusive queues given back
        self._connection_methods = ConnectionMethods(self)

    # -- entry points --------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> Sequence[Action]:
        """Bytes from the socket: handle every complete frame (unless a wait holds them up)."""
        if self._closed:
            return _NO_ACTIONS
        self.reader.receive_data(data)
        if self._wait is None:
            self._process()
        return self._finish()

    def data_to_send(self) -> bytes:
        """Everything to write to the socket since the last call, in order."""
        self._signalled = False
        if self._confirms_ready:
            ready, self._confirms_ready = self._confirms_ready, []
            for confirms in ready:
                for frame in confirms.flush():
                    self._write(self.writer.method(confirms.channel, frame))
        out = self._out
        if not out:
            return b""
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        return data

    def wait_done(self, result: object) -> Sequence[Action]:
        """The :class:`CheckPassword` or :class:`AwaitCore` handed out came back with
        ``result``: run the method's continuation, then the frames buffered meanwhile."""
        wait = self._take_wait()
        if wait is None:
            return _NO_ACTIONS
        try:
            if self._still_wanted(wait):
                wait.then(result)
        except (WharfError, AMQPError) as exc:
            self._handle_error(self._with_method(exc, wait), wait.channel)
        except Exception as exc:  # a bug: report 541 and close rather than hang
            self._internal_error(exc)
        return self._resume(wait)

    def wait_failed(self, exc: BaseException) -> Sequence[Action]:
        """The wait handed out raised ``exc``: the method's error, as if raised at once."""
        wait = self._take_wait()
        if wait is None:
            return _NO_ACTIONS
        if isinstance(exc, WharfError | AMQPError):
            if self._still_wanted(wait):
                self._handle_error(self._with_method(exc, wait), wait.channel)
        else:
            self._internal_error(exc)
        return self._resume(wait)

    def durable(self, batch: AwaitDurable, failed: Sequence[int] = ()) -> Sequence[Action]:
        """The adapter waited for ``batch``; the results at the indexes ``failed`` could not be
        stored (they are nacked, the rest acked)."""
        if not self._closed:
            batch.confirms.settle(batch, failed)
        return _NO_ACTIONS

    def heartbeat_due(self) -> None:
        """Nothing was sent for half the heartbeat interval: send a heartbeat frame."""
        self.send_raw(self.writer.heartbeat())

    def set_writable(self, writable: bool) -> None:
        """Flow control from the adapter: stop deliveries while the client is not reading."""
        self.writable = writable
        if writable:
            for channel in list(self.channels.values()):
                channel.consuming.resume_deliveries()

    def set_alarm(self, reason: str | None) -> Sequence[Action]:
        """A resource alarm was raised (``reason``) or cleared (None) by the server.

        As in RabbitMQ, a connection is blocked only once it publishes while the alarm is on:
        it gets Connection.Blocked (if it advertised ``connection.blocked``) and the broker
        stops reading from it; consumers keep draining queues. Clearing the alarm unblocks it.
        """
        self.alarm = reason
        if reason is None and self.blocked:
            self._connection_methods.unblock()
        return self._finish()

    def close_from_server(self, code: ReplyCode, text: str) -> Sequence[Action]:
        """Close initiated by the server (shutdown, an operator)."""
        if self.close_reason is None:
            self.close_reason = f"{code.name} - {text}"
        self.send_connection_close(code, f"{code.name} - {text}")
        return self._finish()

    def timed_out(self, reason: str) -> Sequence[Action]:
        """The adapter drops the socket without a closing handshake (a timer ran out)."""
        self.close_reason = reason
        return self.connection_lost()

    def connection_lost(self) -> Sequence[Action]:
        """The socket is gone (or about to be): give back everything this connection held."""
        self._release_channels()
        self._closed = True
        self._wait = None
        self._release_exclusive_queues()
        return self._take_actions()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def client_capabilities(self) -> dict[str, Any]:
        caps = self.client_properties.get("capabilities")
        return caps if isinstance(caps, dict) else {}

    @property
    def blocked_notifications(self) -> bool:
        return bool(self.client_capabilities.get("connection.blocked"))

    # -- what channels call --------------------------------------------------------------------

    def send_method(self, channel: int, method: base.Frame) -> None:
        if not self._closed:
            self._write(self.writer.method(channel, method))

    def send_raw(self, data: bytes) -> None:
        if not self._closed:
            self._write(data)

    def await_core(
        self, awaitable: Coroutine[Any, Any, Any], then: Callable[[Any], None]
    ) -> None:
        """Hand ``awaitable`` to the adapter; call ``then(result)`` once it is done."""
        self.wait_on(AwaitCore(awaitable), then)

    # -- what the connection class calls -------------------------------------------------------

    def wait_on(self, action: AwaitCore | CheckPassword, then: Callable[[Any], None]) -> None:
        """Hand ``action`` to the adapter and read no further frame until it comes back; then
        call ``then(result)``."""
        current = self._current
        assert current is not None and self._wait is None
        self._wait = _Wait(current.channel, current.method, then)
        self._actions.append(action)

    def hand_out(self, action: Action) -> None:
        """Add ``action`` to those the current entry point returns."""
        self._actions.append(action)

    def confirms_for(self, channel: int) -> PublisherConfirms:
        """The confirm bookkeeping of a channel entering confirm mode."""
        return PublisherConfirms(
            channel,
            batch_opened=self._open_batches.append,
            ready=self._confirm_ready,
            observer=self.request_stats,
        )

    # -- the frame loop ------------------------------------------------------------------------

    def _process(self) -> None:
        """Dispatch buffered frames until none is complete, a wait starts or we close."""
        reader = self.reader
        while not self._closed and self._wait is None:
            try:
                event = reader.next_event()
            except AMQPError as exc:
                # The byte stream cannot be parsed any further: say why, then hang up.
                self._handle_error(exc, 0)
                self.shutdown()
                break
            if event is NEED_DATA:
                break
            try:
                if isinstance(event, _CONTENT_FRAMES):
                    self._content_frame(event)
                else:
                    self._dispatch(event)
            except Exception as exc:  # a bug: report 541 and close rather than hang
                self._internal_error(exc)
                break
        if self._open_batches:
            for confirms in self._open_batches:
                batch = confirms.take_batch()
                if batch is not None:
                    self._actions.append(batch)
            self._open_batches.clear()

    def _finish(self) -> Sequence[Action]:
        """End of an entry point: ask to pause or resume reading, hand out the actions."""
        if not self._closed:
            pause = (self.blocked and not self._finishing_message()) or (
                self.reader.buffered > _MAX_BUFFERED_FACTOR * self.reader.frame_max
            )
            if pause is not self._reading_paused:
                self._reading_paused = pause
                self._actions.append(PAUSE_READING if pause else RESUME_READING)
        return self._take_actions()

    def _finishing_message(self) -> bool:
        """Whether the message whose publish blocked the connection is still being read (only
        that one: messages begun after it wait for the alarm to clear)."""
        publish = self._finishing
        if publish is None:
            return False
        channel = self.channels.get(publish.channel)
        if channel is None or channel.state is not ChannelState.OPEN or (
            not channel.publishing.reading(publish)
        ):
            self._finishing = None
            return False
        return True

    def _take_actions(self) -> Sequence[Action]:
        if not self._actions:
            return _NO_ACTIONS
        actions, self._actions = self._actions, []
        return actions

    def _take_wait(self) -> _Wait | None:
        wait, self._wait = self._wait, None
        return None if self._closed else wait

    def _still_wanted(self, wait: _Wait) -> bool:
        """Whether a continuation still applies (not after a close in the meantime)."""
        if self.state in DISCARDING_STATES:
            return False
        if wait.channel == 0:
            return True
        channel = self.channels.get(wait.channel)
        return channel is not None and channel.state is ChannelState.OPEN

    def _resume(self, wait: _Wait) -> Sequence[Action]:
        if wait.timed_since is not None and self.request_stats is not None:
            self.request_stats.observe(wait.method.name, perf_counter() - wait.timed_since)
        if not self._closed and self._wait is None:
            self._process()
        return self._finish()

    @staticmethod
    def _with_method(exc: WharfError | AMQPError, wait: _Wait) -> WharfError | AMQPError:
        if isinstance(exc, BrokerError) and wait.channel:
            return with_method(exc, wait.method)
        return exc

    def _internal_error(self, exc: BaseException) -> None:
        log.error("amqp %s: internal error", self.peer, exc_info=exc)
        self._handle_error(exc, 0)
        self.shutdown()

    def _content_frame(self, event: PublishFrame | ContentHeaderFrame | ContentBodyFrame) -> None:
        """The hot path: frames of a published message, handled without waiting."""
        if self.alarm is not None and not self.blocked and self.state is ConnState.OPEN:
            self._connection_methods.block()
            if type(event) is PublishFrame:
                self._finishing = event
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
            publishing = channel.publishing
            publishing.content(event)
            if type(event) is PublishFrame:
                self.requests += 1
                content = self.reader.read_content(number, MAX_BODY_SIZE)
                if content is not None:
                    publishing.whole_content(*content)
        except (WharfError, AMQPError) as exc:
            self._handle_error(exc, number)

    def _dispatch(self, event: object) -> None:
        if isinstance(event, MethodFrame):
            self.requests += 1
            stats = self.request_stats
            method = event.method
            if stats is None or not (method.synchronous or type(method) is _START_OK):
                self._method(event)
                return
            started = perf_counter()
            self._method(event)
            wait = self._wait
            if wait is None:
                stats.observe(method.name, perf_counter() - started)
            else:
                wait.timed_since = started
        elif isinstance(event, HeartbeatFrame):
            return
        elif isinstance(event, ProtocolHeaderReceived):
            self._connection_methods.start()

    def _method(self, event: MethodFrame) -> None:
        self._current = event
        if event.channel == 0:
            try:
                self._connection_methods.handle(event.method)
            except (WharfError, AMQPError) as exc:
                self._handle_error(exc, 0)
        else:
            self._channel_frame(event.channel, event)

    def send_connection_close(
        self, code: ReplyCode, text: str, class_id: int = 0, method_id: int = 0
    ) -> None:
        """Start the closing handshake (or just hang up if it cannot be understood)."""
        if self.state in DISCARDING_STATES or self._closed:
            return
        if self.state is ConnState.AWAIT_HEADER:
            self.shutdown()
            return
        self.state = connection_transition(self.state, ConnInput.SEND_CLOSE)
        self.send_method(
            0,
            commands.Connection.Close(
                reply_code=int(code),
                reply_text=text[:255],
                class_id=class_id,
                method_id=method_id,
            ),
        )
        self._release_channels()
        # Do not wait for ever for Close-Ok: the adapter hangs up after a grace period.
        self._actions.append(AWAIT_CLOSE_OK)

    # -- channels ------------------------------------------------------------------------------

    def _channel_frame(self, number: int, event: MethodFrame) -> None:
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
                self.send_method(number, commands.Channel.CloseOk())
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
            channel.handle(event)
        except (WharfError, AMQPError) as exc:
            self._handle_error(exc, number)

    def _open_channel(self, number: int) -> None:
        if number > self.channel_max:
            raise AMQPConnectionError(
                ReplyCode.CHANNEL_ERROR,
                f"channel {number} is above channel_max {self.channel_max}",
            )
        self.channels[number] = Channel(self, number)
        self.send_method(number, commands.Channel.OpenOk())

    def _drop_channel(self, number: int) -> None:
        channel = self.channels.pop(number, None)
        if channel is not None:
            channel.release_now()

    def _release_exclusive_queues(self) -> None:
        """Exclusive queues die with the connection that declared them (the owner is us)."""
        if self._released:
            return
        self._released = True
        if self.state is ConnState.AWAIT_HEADER or self.vhost_name not in self.broker.vhosts:
            return
        vhost = self.broker.vhosts[self.vhost_name]
        if any(q.exclusive_owner is self for q in vhost.queues.values()):
            self._actions.append(RunInBackground(vhost.connection_closed(self)))

    def _release_channels(self) -> None:
        channels, self.channels = self.channels, {}
        for channel in channels.values():
            channel.release_now()

    def _confirm_ready(self, confirms: PublisherConfirms) -> None:
        if confirms not in self._confirms_ready:
            self._confirms_ready.append(confirms)
        self._signal()

    # -- errors --------------------------------------------------------------------------------

    def _handle_error(self, exc: BaseException, channel_number: int) -> None:
        """The one place where an exception becomes a wire response."""
        if isinstance(exc, BadProtocolHeader):
            self.close_reason = str(exc)
            self._write(FrameWriter.protocol_header())
            self.shutdown()
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
            self.send_method(
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

    def _write(self, data: bytes) -> None:
        self._out.append(data)
        if not self._signalled:
            self._signal()

    def _signal(self) -> None:
        if not self._signalled:
            self._signalled = True
            self._wakeup()

    def shutdown(self) -> None:
        """Hang up: give back what this connection holds, then close the socket."""
        if self._closed:
            return
        self._release_channels()
        self._closed = True
        self._wait = None
        self._release_exclusive_queues()
        self._actions.append(CLOSE_TRANSPORT)
