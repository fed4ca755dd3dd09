"""The HTTP listener of ``wharf serve`` listens before aiohttp is loaded: a connection made
then waits in the backlog and is served once the application is attached (at the first
connection, or after a delay on an idle broker); closing releases the port whether or not the
application was ever attached."""

from __future__ import annotations

import asyncio
import logging
import socket
from pathlib import Path

import pytest

import wharf.http.app
from wharf.core.broker import Broker
from wharf.http.listener import HttpListener

REQUEST = b"GET /healthz HTTP/1.1\r\nHost: wharf\r\nConnection: close\r\n\r\n"


async def _read_to_end(conn: socket.socket) -> bytes:
    loop = asyncio.get_running_loop()
    conn.setblocking(False)
    received = b""
    while chunk := await loop.sock_recv(conn, 65536):
        received += chunk
    return received


def _assert_refused(port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


async def test_a_request_sent_before_the_app_is_attached_is_answered(tmp_path: Path) -> None:
    async with Broker.open(tmp_path / "data") as broker:
        listener = HttpListener("127.0.0.1", 0)
        ((name, host, port),) = await listener.start(broker)
        assert (name, host) == ("http", "127.0.0.1")
        try:
            # nothing awaited since start: the loop has not run the task attaching the app, yet
            # the kernel accepts the connection and takes the request
            with socket.create_connection((host, port), timeout=5) as conn:
                conn.sendall(REQUEST)
                assert not listener.serving
                response = await asyncio.wait_for(_read_to_end(conn), 30)
            assert response.startswith(b"HTTP/1.1 200"), response
            assert listener.serving
        finally:
            await listener.close(5)
        _assert_refused(port)


async def test_the_first_connection_loads_the_app_without_waiting_for_the_timer(
    tmp_path: Path,
) -> None:
    async with Broker.open(tmp_path / "data") as broker:
        listener = HttpListener("127.0.0.1", 0, load_after=3600)
        ((_, host, port),) = await listener.start(broker)
        try:
            await asyncio.sleep(0.05)
            assert not listener.serving  # nothing connected, the timer is an hour away
            with socket.create_connection((host, port), timeout=5) as conn:
                conn.sendall(REQUEST)
                response = await asyncio.wait_for(_read_to_end(conn), 30)
            assert response.startswith(b"HTTP/1.1 200"), response
            assert listener.serving
        finally:
            await listener.close(5)


async def test_an_idle_listener_loads_the_app_after_its_delay(tmp_path: Path) -> None:
    async with Broker.open(tmp_path / "data") as broker:
        listener = HttpListener("127.0.0.1", 0, load_after=0.05)
        ((_, host, port),) = await listener.start(broker)
        try:
            assert not listener.serving
            assert await asyncio.wait_for(listener.wait_serving(), 30)
            with socket.create_connection((host, port), timeout=5) as conn:
                conn.sendall(REQUEST)
                response = await asyncio.wait_for(_read_to_end(conn), 30)
            assert response.startswith(b"HTTP/1.1 200"), response
        finally:
            await listener.close(5)


async def test_closing_before_the_app_is_attached_releases_the_port(tmp_path: Path) -> None:
    async with Broker.open(tmp_path / "data") as broker:
        listener = HttpListener("127.0.0.1", 0)
        ((_, _, port),) = await listener.start(broker)
        await listener.close(5)
        assert not await listener.wait_serving()
        _assert_refused(port)


async def test_an_app_that_cannot_start_closes_the_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("no application today")

    monkeypatch.setattr(wharf.http.app, "serve_sockets", broken)
    async with Broker.open(tmp_path / "data") as broker:
        listener = HttpListener("127.0.0.1", 0)
        ((_, _, port),) = await listener.start(broker)
        with caplog.at_level(logging.ERROR, logger="wharf.http.listener"):
            assert not await listener.wait_serving()
        assert "the HTTP API could not start; its port is closed" in caplog.text
        assert "no application today" in caplog.text
        _assert_refused(port)
        await listener.close(5)


async def test_a_taken_port_fails_the_start(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        async with Broker.open(tmp_path / "data") as broker:
            listener = HttpListener("127.0.0.1", taken.getsockname()[1])
            with pytest.raises(OSError, match="in use"):
                await listener.start(broker)
