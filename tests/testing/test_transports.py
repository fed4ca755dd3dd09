"""The in-memory transport that stands in for a socket in the server's protocol tests."""

from __future__ import annotations

import asyncio

import pytest

from wharf.testing.transports import connect


class Echo(asyncio.Protocol):
    """Writes back what it receives, and notes what the transport tells it."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.lost: list[Exception | None] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost.append(exc)


async def test_input_waits_while_reading_is_paused() -> None:
    echo = Echo()
    transport = connect(echo, peer=("10.0.0.7", 4242))
    assert echo.transport is transport
    assert transport.get_extra_info("peername") == ("10.0.0.7", 4242)
    transport.feed(b"one")
    assert transport.take() == b"one"
    transport.pause_reading()
    assert not transport.is_reading() and transport.pauses == 1
    transport.feed(b"two")
    transport.feed(b"three")
    assert transport.written == []
    transport.resume_reading()
    await transport.wait_until(lambda: len(transport.written) == 2)
    assert transport.take() == b"twothree"


async def test_close_reports_connection_lost_once_on_the_next_turn() -> None:
    echo = Echo()
    transport = connect(echo)
    transport.close()
    assert transport.is_closing() and echo.lost == []
    transport.abort()
    transport.feed(b"too late")
    await transport.wait_until(lambda: transport.lost)
    assert echo.lost == [None] and transport.written == []
    assert transport.aborted  # recorded, though the transport was closing already


async def test_a_client_that_goes_away() -> None:
    echo = Echo()
    transport = connect(echo)
    reset = ConnectionResetError("reset by peer")
    transport.disconnect(reset)
    assert echo.lost == [reset] and transport.closed
    transport.close()
    await asyncio.sleep(0)
    assert echo.lost == [reset]


async def test_waiting_for_what_never_happens_times_out() -> None:
    transport = connect(Echo())
    with pytest.raises(TimeoutError):
        await transport.wait_until(lambda: transport.written, timeout_s=0.01)
