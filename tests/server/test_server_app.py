"""The server's life cycle in-process, with small real-socket listeners.

The listeners here are line-echo servers on 127.0.0.1: they exercise the listener interface
(start / stop_accepting / close) that the Kafka, AMQP and HTTP front ends implement, with real
sockets and the real broker.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import re
import socket
from collections.abc import Sequence
from pathlib import Path

import pytest

from wharf.core.broker import Broker
from wharf.core.data_dir_lock import PID_FILE_NAME, DataDirLock
from wharf.server.app import (
    GC_YOUNG_THRESHOLD,
    StartupError,
    collector_paused,
    serve,
    tune_gc,
)
from wharf.server.listener import Endpoint, Listener
from wharf.server.settings import ServerSettings
from wharf.server.shutdown import ShutdownRequest


class EchoListener:
    """Echoes lines back; on close, lets each connection finish the line it is on."""

    def __init__(self, name: str, settings: ServerSettings, events: list[str]) -> None:
        self.name = name
        self.host = settings.host
        self.events = events
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.Task[None]] = set()
        self.hang_on_close = False

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections.add(task)
        try:
            while line := await reader.readline():
                writer.write(line)
                await writer.drain()
        finally:
            self.connections.discard(task)
            writer.close()

    async def start(self, broker: Broker) -> Sequence[Endpoint]:
        assert not broker.closed
        self.server = await asyncio.start_server(self._handle, self.host, 0)
        self.events.append(f"{self.name} started")
        host, port = self.server.sockets[0].getsockname()[:2]
        return [(self.name, host, port)]

    async def stop_accepting(self) -> None:
        assert self.server is not None
        self.server.close()
        self.events.append(f"{self.name} stopped accepting")

    async def close(self, grace_s: float) -> None:
        self.events.append(f"{self.name} closing")
        if self.hang_on_close:
            await asyncio.Event().wait()
        if self.connections:
            await asyncio.wait(self.connections, timeout=grace_s)
        for task in self.connections:
            task.cancel()
        self.events.append(f"{self.name} closed")


class BusyPortListener:
    name = "busy"

    def __init__(self, port: int) -> None:
        self.port = port

    async def start(self, broker: Broker) -> Sequence[Endpoint]:
        await asyncio.start_server(lambda r, w: None, "127.0.0.1", self.port)
        raise AssertionError("the port was expected to be taken")

    async def stop_accepting(self) -> None:
        raise AssertionError("never started")

    async def close(self, grace_s: float) -> None:
        raise AssertionError("never started")


@pytest.fixture
def settings(tmp_path: Path) -> ServerSettings:
    return ServerSettings(data_dir=tmp_path / "data", shutdown_timeout_ms=5000)


@pytest.fixture(autouse=True)
def _info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wharf")


async def _wait_for_log(caplog: pytest.LogCaptureFixture, pattern: str) -> re.Match[str]:
    async with asyncio.timeout(30):
        while True:
            for record in caplog.records:
                if match := re.search(pattern, record.getMessage()):
                    return match
            await asyncio.sleep(0.01)


async def test_ready_line_names_every_listener_and_shutdown_is_staged(
    settings: ServerSettings, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[str] = []
    listeners: list[EchoListener] = []

    def factory(name: str):  # type: ignore[no-untyped-def]
        def make(s: ServerSettings) -> Listener:
            listeners.append(EchoListener(name, s, events))
            return listeners[-1]

        return make

    shutdown = ShutdownRequest()
    server = asyncio.create_task(serve(settings, [factory("alpha"), factory("beta")], shutdown))
    ready = await _wait_for_log(
        caplog, r"^wharf ready: alpha=127\.0\.0\.1:(\d+) beta=127\.0\.0\.1:(\d+)$"
    )
    alpha_port, beta_port = int(ready.group(1)), int(ready.group(2))
    assert [r.getMessage() for r in caplog.records].count(ready.group(0)) == 1

    reader, writer = await asyncio.open_connection("127.0.0.1", alpha_port)
    writer.write(b"one\n")
    assert await reader.readline() == b"one\n"
    writer.write(b"in flight")  # half a line: the connection is busy when shutdown begins

    shutdown.request("test")
    async with asyncio.timeout(30):
        while "alpha closing" not in events:
            await asyncio.sleep(0.01)
    with pytest.raises(OSError):  # no longer accepting
        socket.create_connection(("127.0.0.1", beta_port), timeout=5).close()
    assert not server.done()  # waiting for the busy connection
    writer.write(b"\n")
    assert await reader.readline() == b"in flight\n"  # the in-flight request completes
    writer.close()
    await asyncio.wait_for(server, 30)

    assert events.index("alpha stopped accepting") < events.index("alpha closing")
    assert events.index("beta stopped accepting") < events.index("alpha closing")
    assert set(events[-2:]) == {"alpha closed", "beta closed"}
    messages = [r.getMessage() for r in caplog.records]
    assert messages.index("broker closed") < messages.index("wharf stopped")
    DataDirLock(settings.data_dir).acquire()  # released


async def _serve_stuck_listener(
    settings: ServerSettings,
    caplog: pytest.LogCaptureFixture,
    events: list[str],
    *,
    grace_ms: int,
) -> tuple[asyncio.Task[None], ShutdownRequest]:
    """Serve one listener that never finishes closing, and ask for a shutdown once ready."""
    settings.shutdown_timeout_ms = grace_ms
    stuck = EchoListener("stuck", settings, events)
    stuck.hang_on_close = True
    shutdown = ShutdownRequest()
    server = asyncio.create_task(serve(settings, [lambda s: stuck], shutdown))
    await _wait_for_log(caplog, r"^wharf ready: stuck=")
    shutdown.request("test")
    return server, shutdown


async def test_a_listener_that_overruns_its_grace_is_cancelled(
    settings: ServerSettings, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[str] = []
    server, shutdown = await _serve_stuck_listener(settings, caplog, events, grace_ms=50)
    await asyncio.wait_for(server, 30)
    assert "listener stuck did not close in time; cancelling it" in caplog.text
    assert "stuck closed" not in events


async def test_a_second_signal_skips_the_grace_period(
    settings: ServerSettings, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[str] = []
    server, shutdown = await _serve_stuck_listener(settings, caplog, events, grace_ms=600_000)
    async with asyncio.timeout(30):
        while "stuck closing" not in events:
            await asyncio.sleep(0.01)
    shutdown.forced.set()
    await asyncio.wait_for(server, 30)
    assert "cancelling it" in caplog.text


async def test_a_taken_port_stops_startup_and_closes_what_started(
    settings: ServerSettings, caplog: pytest.LogCaptureFixture
) -> None:
    events: list[str] = []
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(StartupError, match=r"cannot start the busy listener on 127\.0\.0\.1"):
            await serve(
                settings,
                [lambda s: EchoListener("first", s, events), lambda s: BusyPortListener(port)],
            )
    assert events == ["first started", "first stopped accepting", "first closing", "first closed"]
    assert "ready" not in caplog.text
    DataDirLock(settings.data_dir).acquire()  # released


async def test_data_dir_in_use_refuses_naming_the_holder(settings: ServerSettings) -> None:
    refusal = rf"in use by another wharf broker \(pid {os.getpid()}\)"
    with DataDirLock(settings.data_dir):
        with pytest.raises(StartupError, match=refusal):
            await serve(settings, [])


async def test_embedded_broker_holding_the_directory_is_reported(
    settings: ServerSettings,
) -> None:
    refusal = rf"in use by another wharf broker \(pid {os.getpid()}\)"
    async with Broker.open(settings.data_dir):
        with pytest.raises(StartupError, match=refusal):
            await serve(settings, [])
        assert (settings.data_dir / PID_FILE_NAME).read_text() == f"{os.getpid()}\n"
    assert (settings.data_dir / PID_FILE_NAME).read_text() == ""  # the embedded one released it


def test_tune_gc_freezes_what_exists_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    assert gc.get_freeze_count() == 0
    try:
        tune_gc()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # cycles made after the freeze are still collected
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_the_collector_is_paused_while_the_broker_opens_and_what_it_made_frozen_after() -> None:
    assert gc.isenabled() and gc.get_freeze_count() == 0
    try:
        with collector_paused():
            assert not gc.isenabled()
            made = [[] for _ in range(100)]
        assert gc.isenabled()
        assert gc.get_freeze_count() >= len(made)
        gc.unfreeze()
        gc.disable()
        with collector_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # left as it was found
    finally:
        gc.unfreeze()
        gc.enable()
