"""Fixtures for the AMQP interop tests: a broker with its AMQP listener on a loopback port.

``amqp_broker`` runs the broker core and the AMQP listener in an event loop on a background
thread of the test process (fast to start, one per test); tests that need a real process
(kill -9, restart) use the ``wharf serve`` fixture from ``tests/conftest.py``.
"""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path

import pytest
from amqp_inprocess import InProcessBroker

from wharf.core.broker import Broker
from wharf.core.config import BrokerConfig
from wharf.server.amqp.listener import AMQPListener


@pytest.fixture
def amqp_broker(tmp_path: Path) -> Iterator[InProcessBroker]:
    loop = asyncio.new_event_loop()
    ready: Future[InProcessBroker] = Future()
    stop = threading.Event()

    async def main() -> None:
        broker = await Broker.start(tmp_path / "data", BrokerConfig())
        listener = AMQPListener("127.0.0.1", 0)
        try:
            ((_, host, port),) = await listener.start(broker)
            ready.set_result(InProcessBroker(host, port, loop, broker, listener))
            while not stop.is_set():
                await asyncio.sleep(0.05)
            await listener.stop_accepting()
            await listener.close(2.0)
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
            raise
        finally:
            await broker.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        yield ready.result(timeout=30)
    finally:
        stop.set()
        thread.join(timeout=30)
        loop.close()


@pytest.fixture(autouse=True)
def collect_garbage() -> Iterator[None]:
    """Collect after each test so that a leaked socket is reported against the test leaking it."""
    yield
    gc.collect()
