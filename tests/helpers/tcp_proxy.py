"""A TCP proxy for fault tests that can black-hole the link it carries, then restore it.

:class:`TcpProxy` listens on a free port of 127.0.0.1 and forwards every connection to one
target (a database, an object store). It runs an asyncio loop of its own in a daemon thread, so
it serves a test's subprocesses while the test's thread sleeps or checks.

How the black hole works (:meth:`TcpProxy.black_hole`): one gate, shut, stops every pump before
it forwards its next chunk. Bytes already read wait inside the proxy, nothing more is read, so
the kernel's buffers fill and the senders block: connections stay open and hang, no reset and no
refusal reaches either side, as when a network drops every packet. New connections are accepted
(the kernel completes the handshake) but not connected onward. :meth:`TcpProxy.restore` opens
the gate: held bytes are delivered and waiting connections go on to the target, as TCP's
retransmissions would deliver them once a partition heals. A peer that gave up meanwhile closes
its side, and the proxy closes the other.

This differs from a real partition in one way: the proxy's kernel acknowledges what a peer sends
it, so a peer's TCP keepalives and ``tcp_user_timeout`` never fire; only the peers' own timeouts
end their waits, which is what a fault test wants to see working.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any

_CHUNK = 64 * 1024


class TcpProxy:
    """Forwards 127.0.0.1:<port> to ``target_host:target_port``; use as a context manager."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._open = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="tcp-proxy", daemon=True
        )

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._listen())
        return self

    def black_hole(self) -> None:
        """Hold every byte and every new connection until :meth:`restore`."""
        self._call(self._set_gate(False))

    def restore(self) -> None:
        """Deliver what was held and forward again."""
        self._call(self._set_gate(True))

    def stop(self) -> None:
        """Close the listener and every connection, then end the loop's thread."""
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    # -- inside the proxy's loop ---------------------------------------------------------------

    def _call(self, work: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(work, self._loop).result(10)

    async def _set_gate(self, open_: bool) -> None:
        if open_:
            self._open.set()
        else:
            self._open.clear()

    async def _listen(self) -> None:
        self._open.set()
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._open.set()  # pumps waiting at the gate go on, find their sockets closed, and end

    async def _serve(
        self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter
    ) -> None:
        self._writers.add(client_out)
        try:
            await self._open.wait()
            try:
                target_in, target_out = await asyncio.open_connection(*self.target)
            except OSError:
                return
            self._writers.add(target_out)
            try:
                await asyncio.gather(
                    self._pump(client_in, target_out), self._pump(target_in, client_out)
                )
            finally:
                self._writers.discard(target_out)
                target_out.transport.abort()
        finally:
            self._writers.discard(client_out)
            client_out.transport.abort()

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        """Copy ``source`` to ``sink`` through the gate until either side closes."""
        try:
            while True:
                await self._open.wait()
                data = await source.read(_CHUNK)
                await self._open.wait()
                if not data:
                    break
                sink.write(data)
                await sink.drain()
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.close()
