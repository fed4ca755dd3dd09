"""The AMQP connection state machine over an in-memory transport, against a real broker core.

Frames go in as bytes (marshalled by pamqp, as a client would send them) and come out as bytes
decoded by pamqp; no sockets are involved.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pamqp import base, commands
from pamqp import frame as pamqp_frame

from wharf.core.broker import Broker
from wharf.protocol.amqp.connection import AMQPConnection
from wharf.protocol.amqp.frames import PROTOCOL_HEADER
from wharf.protocol.amqp.state import ConnState


class MemoryTransport:
    def __init__(self) -> None:
        self.output = bytearray()
        self.closed = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.output += data

    def close(self) -> None:
        self.closed = True

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


class Client:
    """Drives one AMQPConnection with frames and reads what it answers."""

    def __init__(self, broker: Broker, *, loopback: bool = True) -> None:
        self.transport = MemoryTransport()
        self.conn = AMQPConnection(broker, self.transport, peer="memory", is_loopback=loopback)
        self.task = asyncio.get_running_loop().create_task(self.conn.run())

    def send(self, channel: int, method: base.Frame) -> None:
        self.conn.receive_data(pamqp_frame.marshal(method, channel))

    async def frames(self) -> list[tuple[int, object]]:
        """Everything written so far, once the connection has processed its input."""
        for _ in range(20):
            await asyncio.sleep(0)
        return self._take()

    def _take(self) -> list[tuple[int, object]]:
        data = bytes(self.transport.output)
        self.transport.output.clear()
        out: list[tuple[int, object]] = []
        while data:
            consumed, channel, value = pamqp_frame.unmarshal(data)
            out.append((channel, value))
            data = data[consumed:]
        return out

    async def expect(self, kind: type) -> object:
        """Wait (authentication runs on a worker thread) for exactly one frame, of ``kind``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 10
        while not self.transport.output and loop.time() < deadline:
            await asyncio.sleep(0.001)
        frames = await self.frames()
        assert len(frames) == 1 and isinstance(frames[0][1], kind), frames
        return frames[0][1]

    async def open(self, *, frame_max: int = 131072, vhost: str = "/") -> None:
        self.conn.receive_data(PROTOCOL_HEADER)
        start = await self.expect(commands.Connection.Start)
        assert isinstance(start, commands.Connection.Start)
        assert start.server_properties["product"] == "Wharf"
        self.send(0, commands.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest"))
        await self.expect(commands.Connection.Tune)
        self.send(0, commands.Connection.TuneOk(channel_max=100, frame_max=frame_max))
        self.send(0, commands.Connection.Open(virtual_host=vhost))


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    async with Broker.open(tmp_path / "data") as broker:
        yield broker


async def test_handshake_channel_and_close_both_ways(broker: Broker) -> None:
    client = Client(broker)
    await client.open()
    await client.expect(commands.Connection.OpenOk)
    assert client.conn.state is ConnState.OPEN
    client.send(1, commands.Channel.Open())
    await client.expect(commands.Channel.OpenOk)
    client.send(1, commands.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0))
    await client.expect(commands.Channel.CloseOk)
    client.send(
        0, commands.Connection.Close(reply_code=200, reply_text="bye", class_id=0, method_id=0)
    )
    await client.expect(commands.Connection.CloseOk)
    assert client.transport.closed and client.conn.closed
    await client.task


async def test_wrong_password_is_access_refused(broker: Broker) -> None:
    client = Client(broker)
    client.conn.receive_data(PROTOCOL_HEADER)
    await client.expect(commands.Connection.Start)
    client.send(0, commands.Connection.StartOk(mechanism="PLAIN", response="\0guest\0nope"))
    close = await client.expect(commands.Connection.Close)
    assert isinstance(close, commands.Connection.Close) and close.reply_code == 403
    client.send(0, commands.Connection.CloseOk())
    await client.frames()
    assert client.transport.closed


async def test_guest_is_refused_from_a_remote_address(broker: Broker) -> None:
    client = Client(broker, loopback=False)
    client.conn.receive_data(PROTOCOL_HEADER)
    await client.expect(commands.Connection.Start)
    client.send(0, commands.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest"))
    close = await client.expect(commands.Connection.Close)
    assert isinstance(close, commands.Connection.Close) and close.reply_code == 403


@pytest.mark.parametrize(
    "frame_max,vhost,code", [(1024, "/", 530), (1 << 20, "/", 530), (131072, "nope", 530)]
)
async def test_tune_and_open_limits(broker: Broker, frame_max: int, vhost: str, code: int) -> None:
    client = Client(broker)
    await client.open(frame_max=frame_max, vhost=vhost)
    close = await client.expect(commands.Connection.Close)
    assert isinstance(close, commands.Connection.Close) and close.reply_code == code


async def test_methods_out_of_order(broker: Broker) -> None:
    client = Client(broker)
    client.conn.receive_data(PROTOCOL_HEADER)
    await client.expect(commands.Connection.Start)
    client.send(0, commands.Connection.Open(virtual_host="/"))  # before Start-Ok
    close = await client.expect(commands.Connection.Close)
    assert isinstance(close, commands.Connection.Close) and close.reply_code == 503
    # Until Close-Ok, everything but Close/Close-Ok is discarded.
    client.send(1, commands.Channel.Open())
    assert await client.frames() == []


async def test_channel_errors_keep_the_connection(broker: Broker) -> None:
    client = Client(broker)
    await client.open()
    await client.expect(commands.Connection.OpenOk)
    client.send(1, commands.Channel.Open())
    await client.expect(commands.Channel.OpenOk)
    client.send(1, commands.Queue.Declare(queue="missing", passive=True))
    close = await client.expect(commands.Channel.Close)
    assert isinstance(close, commands.Channel.Close)
    assert (close.reply_code, close.class_id, close.method_id) == (404, 50, 10)
    client.send(1, commands.Queue.Declare(queue="ignored"))  # discarded until Close-Ok
    assert await client.frames() == []
    client.send(1, commands.Channel.CloseOk())
    client.send(1, commands.Channel.Open())
    await client.expect(commands.Channel.OpenOk)
    client.send(1, commands.Channel.Open())  # twice: a connection error
    close = await client.expect(commands.Connection.Close)
    assert isinstance(close, commands.Connection.Close) and close.reply_code == 504


async def test_channel_flow_stops_and_resumes(broker: Broker) -> None:
    client = Client(broker)
    await client.open()
    await client.expect(commands.Connection.OpenOk)
    client.send(1, commands.Channel.Open())
    await client.expect(commands.Channel.OpenOk)
    client.send(1, commands.Channel.Flow(active=False))
    flow_ok = await client.expect(commands.Channel.FlowOk)
    assert isinstance(flow_ok, commands.Channel.FlowOk) and flow_ok.active is False
    assert client.conn.channels[1].active is False
    client.send(1, commands.Channel.Flow(active=True))
    flow_ok = await client.expect(commands.Channel.FlowOk)
    assert isinstance(flow_ok, commands.Channel.FlowOk) and flow_ok.active is True
