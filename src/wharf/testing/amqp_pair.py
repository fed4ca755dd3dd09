"""An AMQP client joined in memory to a server-side :class:`AMQPConnection`, for tests.

How it works: :class:`AMQPPair` encodes what a client would send with pamqp, feeds the bytes to
the connection and decodes what it answers, again with pamqp; no socket and no event loop
tricks are involved. The actions the connection returns are kept in ``actions`` for a test to
look at; :meth:`AMQPPair.carry_out` plays the adapter's part for the ones that produce input
(a password check runs inline, core coroutines and durability waits are awaited) and records
the rest (``closed``, ``reading``, ``heartbeat_s``), until none is left.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pamqp import base, body, commands, header
from pamqp import frame as pamqp_frame

from wharf.core.broker import Broker
from wharf.errors import BrokerError, StorageError
from wharf.protocol.amqp import actions as act
from wharf.protocol.amqp.connection import AMQPConnection, AMQPSettings
from wharf.protocol.amqp.frames import PROTOCOL_HEADER
from wharf.protocol.amqp.timing import RequestObserver

__all__ = ["AMQPPair", "Frame", "content_frames"]

#: A decoded frame: (channel, pamqp frame object).
Frame = tuple[int, Any]


def content_frames(
    channel: int,
    publish: commands.Basic.Publish,
    payload: bytes,
    properties: commands.Basic.Properties | None = None,
    *,
    frame_max: int = 131072,
) -> bytes:
    """The bytes of Basic.Publish, its content header and body frames (split at frame_max)."""
    props = properties or commands.Basic.Properties()
    parts = [
        pamqp_frame.marshal(publish, channel),
        pamqp_frame.marshal(header.ContentHeader(0, len(payload), props), channel),
    ]
    chunk = frame_max - 8
    for start in range(0, len(payload), chunk):
        parts.append(pamqp_frame.marshal(body.ContentBody(payload[start : start + chunk]), channel))
    return b"".join(parts)


class AMQPPair:
    """A server connection and the test standing in for both its client and its adapter."""

    def __init__(
        self,
        broker: Broker,
        *,
        loopback: bool = True,
        settings: AMQPSettings | None = None,
        request_stats: RequestObserver | None = None,
    ) -> None:
        self.wakeups = 0
        self.conn = AMQPConnection(
            broker,
            peer="memory",
            is_loopback=loopback,
            settings=settings,
            request_stats=request_stats,
            wakeup=self._wakeup,
        )
        self.actions: list[act.Action] = []  # every action returned, in order
        self.closed = False
        self.reading = True
        self.heartbeat_s: int | None = None  # set by HandshakeComplete
        self.awaiting_close_ok = False

    def _wakeup(self) -> None:
        self.wakeups += 1

    # -- client to server ----------------------------------------------------------------------

    def feed(self, data: bytes) -> Sequence[act.Action]:
        """Give ``data`` to the connection; returns (and keeps) the actions it asks for."""
        actions = self.conn.receive_data(data)
        self.actions += actions
        return actions

    def send(self, channel: int, method: base.Frame) -> Sequence[act.Action]:
        return self.feed(pamqp_frame.marshal(method, channel))

    async def call(self, channel: int, method: base.Frame) -> list[Frame]:
        """Send ``method``, carry out what it asks for and return what the server answered."""
        await self.carry_out(self.send(channel, method))
        return self.received()

    async def expect(self, channel: int, method: base.Frame, kind: type) -> Any:
        """:meth:`call`, asserting that the answer is exactly one frame of ``kind``."""
        frames = await self.call(channel, method)
        assert len(frames) == 1 and isinstance(frames[0][1], kind), frames
        return frames[0][1]

    async def open(
        self,
        *,
        vhost: str = "/",
        frame_max: int = 131072,
        heartbeat: int = 0,
        capabilities: dict[str, bool] | None = None,
    ) -> None:
        """The whole handshake, as guest; asserts that the connection opens."""
        client_properties: dict[str, Any] = {"capabilities": capabilities or {}}
        await self.carry_out(self.feed(PROTOCOL_HEADER))
        start = self.received()
        assert isinstance(start[0][1], commands.Connection.Start), start
        await self.expect(
            0,
            commands.Connection.StartOk(
                client_properties=client_properties,
                mechanism="PLAIN",
                response="\0guest\0guest",
            ),
            commands.Connection.Tune,
        )
        self.send(0, commands.Connection.TuneOk(frame_max=frame_max, heartbeat=heartbeat))
        opened = commands.Connection.Open(virtual_host=vhost)
        await self.expect(0, opened, commands.Connection.OpenOk)

    # -- server to client ----------------------------------------------------------------------

    def received(self) -> list[Frame]:
        """Everything the connection has to send, decoded."""
        data = self.conn.data_to_send()
        out: list[Frame] = []
        while data:
            consumed, channel, value = pamqp_frame.unmarshal(data)
            out.append((channel, value))
            data = data[consumed:]
        return out

    # -- the adapter's part --------------------------------------------------------------------

    async def carry_out(self, actions: Sequence[act.Action]) -> None:
        """Carry out ``actions`` and those they lead to, in order, until none is left."""
        todo = list(actions)
        while todo:
            action = todo.pop(0)
            more: Sequence[act.Action] = ()
            if isinstance(action, act.CheckPassword):
                more = self.conn.wait_done(action.check())
            elif isinstance(action, act.AwaitCore):
                try:
                    result = await action.awaitable
                except Exception as exc:
                    more = self.conn.wait_failed(exc)
                else:
                    more = self.conn.wait_done(result)
            elif isinstance(action, act.AwaitDurable):
                failed = []
                for index, result in enumerate(action.results):
                    if result is not None:
                        try:
                            await result.wait_durable()
                        except (StorageError, BrokerError):
                            failed.append(index)
                more = self.conn.durable(action, failed)
            elif isinstance(action, act.RunInBackground):
                await action.awaitable
            else:
                self._record(action)
            self.actions += more
            todo += more

    def _record(self, action: act.Action) -> None:
        if isinstance(action, act.CloseTransport):
            self.closed = True
        elif isinstance(action, act.PauseReading):
            self.reading = False
        elif isinstance(action, act.ResumeReading):
            self.reading = True
        elif isinstance(action, act.HandshakeComplete):
            self.heartbeat_s = action.heartbeat_s
        elif isinstance(action, act.AwaitCloseOk):
            self.awaiting_close_ok = True
