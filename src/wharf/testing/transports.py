"""An in-memory asyncio transport, for driving a server's protocol objects without a socket.

How it works: :func:`connect` makes a :class:`MemoryTransport` for an ``asyncio.Protocol`` (the
Kafka connection, the AMQP adapter) and calls its ``connection_made``, as the event loop does
on accept. The test then plays the client: :meth:`MemoryTransport.feed` hands the protocol
bytes (held back while the protocol has paused reading, and delivered on the loop's next turn
after it resumes, as a socket's receive buffer would), :meth:`MemoryTransport.disconnect` is
the client going away. Everything the protocol does to the transport is recorded: ``written``
keeps each write, ``paused`` and ``pauses`` the reading flow control, ``closed`` and
``aborted`` how it ended. ``close`` and ``abort`` report ``connection_lost`` to the protocol
on the loop's next turn, once, as the loop's own transports do.

:meth:`MemoryTransport.wait_until` awaits a condition, looking again after each thing the
protocol does to the transport, so a test waits for a reply without sleeping.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

__all__ = ["MemoryTransport", "connect"]


class MemoryTransport(asyncio.Transport):
    """A transport that keeps in memory what its protocol does to it (see the module docstring)."""

    def __init__(
        self,
        protocol: asyncio.Protocol,
        *,
        peer: tuple[str, int] = ("127.0.0.1", 50000),
        local: tuple[str, int] = ("127.0.0.1", 5672),
    ) -> None:
        super().__init__()
        self.protocol = protocol
        self.peer = peer
        self.local = local
        self.written: list[bytes] = []
        self.paused = False  # reading paused by the protocol
        self.pauses = 0
        self.closed = False
        self.aborted = False
        self.lost = False  # connection_lost reported to the protocol
        self.write_buffer_limits: tuple[int | None, int | None] = (None, None)
        self._inbox: list[bytes] = []  # fed while paused
        self._changed = asyncio.Event()

    # -- what the protocol calls ------------------------------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.peer
        if name == "sockname":
            return self.local
        return default

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))
        self._changed.set()

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1
        self._changed.set()

    def resume_reading(self) -> None:
        self.paused = False
        self._changed.set()
        if self._inbox:
            asyncio.get_running_loop().call_soon(self._deliver)

    def is_reading(self) -> bool:
        return not self.paused and not self.closed

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.write_buffer_limits = (high, low)

    def get_write_buffer_size(self) -> int:
        return 0

    def close(self) -> None:
        self._end()

    def abort(self) -> None:
        self.aborted = True
        self._end()

    def is_closing(self) -> bool:
        return self.closed

    # -- what the test calls ----------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Bytes from the client: to the protocol now, or once it reads again."""
        if self.closed:
            return
        self._inbox.append(data)
        if not self.paused:
            self._deliver()

    def take(self) -> bytes:
        """Everything written since the last call, joined."""
        data = b"".join(self.written)
        self.written.clear()
        return data

    def disconnect(self, exc: Exception | None = None) -> None:
        """The client went away (``exc``: how, None for a clean end of stream)."""
        self.closed = True
        self._lose(exc)

    async def wait_until(self, condition: Callable[[], object], timeout_s: float = 10.0) -> None:
        """Return once ``condition()`` is true, trying it after each change to the transport
        (:class:`TimeoutError` after ``timeout_s``: a guard against a test hanging)."""
        async with asyncio.timeout(timeout_s):
            while not condition():
                self._changed.clear()
                await self._changed.wait()

    # -- inside -----------------------------------------------------------------------------

    def _deliver(self) -> None:
        while self._inbox and not self.paused and not self.closed:
            self.protocol.data_received(self._inbox.pop(0))

    def _end(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._changed.set()
        asyncio.get_running_loop().call_soon(self._lose, None)

    def _lose(self, exc: Exception | None) -> None:
        if self.lost:
            return
        self.lost = True
        self._changed.set()
        self.protocol.connection_lost(exc)


def connect(
    protocol: asyncio.Protocol, *, peer: tuple[str, int] = ("127.0.0.1", 50000)
) -> MemoryTransport:
    """A :class:`MemoryTransport` from ``peer`` for ``protocol``, after its ``connection_made``."""
    transport = MemoryTransport(protocol, peer=peer)
    protocol.connection_made(transport)
    return transport
