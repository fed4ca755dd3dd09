"""An in-process broker with its AMQP listener, for the AMQP interop tests."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from wharf.core.broker import Broker
from wharf.server.amqp.listener import AMQPListener


@dataclass
class InProcessBroker:
    host: str
    port: int
    loop: asyncio.AbstractEventLoop
    broker: Broker
    listener: AMQPListener

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.port}/%2F"

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        """Run a coroutine on the broker's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)
