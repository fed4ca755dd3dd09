"""The asyncio adapter: its timers on a clock the test fires by hand, over a loopback socket;
its flow control over an in-memory transport."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from pamqp import commands
from pamqp import frame as pamqp_frame

from wharf.core.broker import Broker
from wharf.core.clock import Clock
from wharf.protocol.amqp.frames import PROTOCOL_HEADER, FrameWriter
from wharf.server.amqp.adapter import CLOSE_OK_TIMEOUT_S, AMQPAdapter
from wharf.server.amqp.listener import ALARM_CHECK_INTERVAL_S, AMQPListener
from wharf.testing.transports import connect


class Timer:
    def __init__(self, delay_s: float, callback: Callable[[], None]) -> None:
        self.delay_s = delay_s
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class HandClock(Clock):
    """Timers fire only when the test says so; ``monotonic`` moves only when told to."""

    def __init__(self) -> None:
        self.timers: list[Timer] = []
        self.now = 0.0

    def call_later(self, delay_s: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(delay_s, callback)
        self.timers.append(timer)
        return timer

    def monotonic(self) -> float:
        return self.now

    def live(self) -> list[Timer]:
        return [t for t in self.timers if not t.cancelled]

    def fire(self, delay_s: float) -> None:
        [timer] = [t for t in self.live() if t.delay_s == delay_s]
        self.timers.remove(timer)
        timer.callback()


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[tuple[HandClock, AMQPListener, int]]:
    clock = HandClock()
    async with Broker.open(tmp_path / "data", clock=clock) as broker:
        clock.timers.clear()  # the broker's own (maintenance, queue timer): never fired here
        listener = AMQPListener("127.0.0.1", 0)
        ((_, _, port),) = await listener.start(broker)
        try:
            yield clock, listener, port
        finally:
            await listener.stop_accepting()
            await listener.close(1.0)


async def read_frame(reader: asyncio.StreamReader) -> object:
    head = await reader.readexactly(7)
    rest = await reader.readexactly(int.from_bytes(head[3:7], "big") + 1)
    return pamqp_frame.unmarshal(head + rest)[2]


async def handshake(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(PROTOCOL_HEADER)
    assert isinstance(await read_frame(reader), commands.Connection.Start)
    ok = commands.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest")
    writer.write(FrameWriter.method(0, ok))
    assert isinstance(await read_frame(reader), commands.Connection.Tune)
    writer.write(FrameWriter.method(0, commands.Connection.TuneOk(heartbeat=4)))
    writer.write(FrameWriter.method(0, commands.Connection.Open(virtual_host="/")))
    assert isinstance(await read_frame(reader), commands.Connection.OpenOk)


async def test_a_handshake_not_finished_in_time_is_dropped(
    server: tuple[HandClock, AMQPListener, int],
) -> None:
    clock, listener, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(PROTOCOL_HEADER)
    assert isinstance(await read_frame(reader), commands.Connection.Start)
    clock.fire(listener.amqp_settings.handshake_timeout)
    assert await reader.read() == b""  # dropped
    writer.close()


async def test_heartbeats_sent_when_idle_and_a_silent_client_dropped(
    server: tuple[HandClock, AMQPListener, int],
) -> None:
    clock, listener, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await handshake(reader, writer)
    # The listener's alarm poll and a heartbeat check; the handshake timer is gone.
    assert [t.delay_s for t in clock.live()] == [ALARM_CHECK_INTERVAL_S, 2.0]
    clock.now += 2.0
    clock.fire(2.0)
    assert await reader.readexactly(8) == FrameWriter.heartbeat()
    clock.now += 9.0  # more than two intervals without a byte from the client
    clock.fire(2.0)
    assert await reader.read() == b""
    assert [t.delay_s for t in clock.live()] == [ALARM_CHECK_INTERVAL_S]  # the adapter's: none
    writer.close()


async def test_no_close_ok_within_the_grace_period_drops_the_socket(
    server: tuple[HandClock, AMQPListener, int],
) -> None:
    clock, listener, port = server
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    await handshake(reader, writer)
    [adapter] = listener.connections
    adapter.close_from_server("closed by an operator")
    close = await read_frame(reader)
    assert isinstance(close, commands.Connection.Close) and close.reply_code == 320
    live = [t.delay_s for t in clock.live()]
    assert live == [ALARM_CHECK_INTERVAL_S, CLOSE_OK_TIMEOUT_S]  # no more heartbeats
    clock.fire(CLOSE_OK_TIMEOUT_S)
    assert await reader.read() == b""
    writer.close()


async def test_a_full_write_buffer_pauses_reading_until_it_drains(
    server: tuple[HandClock, AMQPListener, int],
) -> None:
    _, listener, _ = server
    adapter = AMQPAdapter(listener)
    transport = connect(adapter)
    assert adapter.conn is not None and adapter in listener.connections
    adapter.pause_writing()
    assert transport.paused and not adapter.conn.writable  # no reads, no deliveries
    transport.feed(PROTOCOL_HEADER)  # waits in the socket
    adapter.resume_writing()
    assert not transport.paused and adapter.conn.writable
    await transport.wait_until(lambda: transport.written)
    _, _, start = pamqp_frame.unmarshal(transport.take())
    assert isinstance(start, commands.Connection.Start)
    transport.disconnect()
    assert adapter not in listener.connections
