"""The AMQP listener's resource-alarm poll, on a virtual clock, with its connections in memory.

The broker runs on a :class:`~wharf.testing.clock.VirtualClock`, so the poll (a timer on the
broker's clock) fires when the test moves time on; each client is an
:class:`~wharf.server.amqp.adapter.AMQPAdapter` on a
:class:`~wharf.testing.transports.MemoryTransport`, so the test sees when the server stops
and resumes reading from it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pamqp import base, commands
from pamqp import frame as pamqp_frame

from wharf.core.broker import Broker
from wharf.protocol.amqp.frames import PROTOCOL_HEADER
from wharf.server.amqp.adapter import AMQPAdapter
from wharf.server.amqp.listener import ALARM_CHECK_INTERVAL_S, AMQPListener
from wharf.testing.amqp_pair import content_frames
from wharf.testing.clock import VirtualClock
from wharf.testing.transports import MemoryTransport, connect

ALARM_CHECK_MS = ALARM_CHECK_INTERVAL_S * 1000


class Client:
    """A client of the listener, joined to its adapter by an in-memory transport."""

    def __init__(self, listener: AMQPListener) -> None:
        self.transport: MemoryTransport = connect(AMQPAdapter(listener))
        self._received = b""

    def send(self, channel: int, method: base.Frame) -> None:
        self.transport.feed(pamqp_frame.marshal(method, channel))

    async def receive(self) -> Any:
        """The next frame the server sends, decoded."""
        while not self._complete():
            await self.transport.wait_until(lambda: self.transport.written)
            self._received += self.transport.take()
        consumed, _, value = pamqp_frame.unmarshal(self._received)
        self._received = self._received[consumed:]
        return value

    async def call(self, channel: int, method: base.Frame, kind: type) -> Any:
        self.send(channel, method)
        answer = await self.receive()
        assert isinstance(answer, kind), answer
        return answer

    def _complete(self) -> bool:
        data = self._received
        return len(data) >= 7 and len(data) >= 8 + int.from_bytes(data[3:7], "big")

    async def open(self, capabilities: dict[str, bool]) -> None:
        self.transport.feed(PROTOCOL_HEADER)
        assert isinstance(await self.receive(), commands.Connection.Start)
        start_ok = commands.Connection.StartOk(
            client_properties={"capabilities": capabilities},
            mechanism="PLAIN",
            response="\0guest\0guest",
        )
        await self.call(0, start_ok, commands.Connection.Tune)
        self.send(0, commands.Connection.TuneOk(heartbeat=0))
        await self.call(0, commands.Connection.Open(virtual_host="/"), commands.Connection.OpenOk)
        await self.call(1, commands.Channel.Open(), commands.Channel.OpenOk)


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[tuple[VirtualClock, Broker, AMQPListener]]:
    clock = VirtualClock()
    async with Broker.open(tmp_path / "data", clock=clock) as broker:
        listener = AMQPListener("127.0.0.1", 0)
        await listener.start(broker)
        try:
            yield clock, broker, listener
        finally:
            await listener.stop_accepting()
            await listener.close(1.0)


async def test_the_alarm_blocks_a_publisher_until_it_clears(
    served: tuple[VirtualClock, Broker, AMQPListener],
) -> None:
    clock, broker, listener = served
    publisher, other = Client(listener), Client(listener)
    await publisher.open({"connection.blocked": True})
    await other.open({})
    declare = commands.Queue.Declare(queue="alarmed")
    await other.call(1, declare, commands.Queue.DeclareOk)
    queue = broker.vhosts["/"].queues["alarmed"]
    publish = commands.Basic.Publish(exchange="", routing_key="alarmed")

    broker.config.memory_high_watermark_bytes = 1  # any process is above one byte
    await clock.run_for(ALARM_CHECK_MS - 1)
    assert listener.alarm is not None and listener.alarm.reason is None  # not polled yet
    await clock.run_for(1)
    assert listener.alarm.reason == "low on memory"
    assert publisher.transport.written == []  # blocked only once it publishes

    publisher.transport.feed(content_frames(1, publish, b"first"))
    blocked = await publisher.receive()
    assert isinstance(blocked, commands.Connection.Blocked) and blocked.reason == "low on memory"
    assert publisher.transport.paused
    publisher.transport.feed(content_frames(1, publish, b"second"))  # waits in the socket
    await clock.run_for(5 * ALARM_CHECK_MS)
    assert queue.message_count == 1
    # A connection that does not publish is not blocked.
    passive = commands.Queue.Declare(queue="alarmed", passive=True)
    declared = await other.call(1, passive, commands.Queue.DeclareOk)
    assert declared.message_count == 1 and not other.transport.paused

    broker.config.memory_high_watermark_bytes = None
    await clock.run_for(ALARM_CHECK_MS)
    assert listener.alarm.reason is None
    assert isinstance(await publisher.receive(), commands.Connection.Unblocked)
    await publisher.transport.wait_until(lambda: not publisher.transport.paused)
    declared = await publisher.call(1, passive, commands.Queue.DeclareOk)
    assert declared.message_count == 2  # the second publish was read once unblocked
    assert other.transport.pauses == 0
    publisher.transport.disconnect()
    other.transport.disconnect()


async def test_the_alarm_poll_stops_with_the_listener(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with Broker.open(tmp_path / "data", clock=clock) as broker:
        before = clock.pending()
        listener = AMQPListener("127.0.0.1", 0)
        await listener.start(broker)
        assert clock.pending() == before + 1
        await clock.run_for(3 * ALARM_CHECK_MS)
        assert clock.pending() == before + 1  # each poll schedules the next
        await listener.stop_accepting()
        assert clock.pending() == before
        await listener.close(1.0)
