"""The HTTP front end as a listener of ``wharf serve``, listening before aiohttp is loaded.

How it works: :meth:`HttpListener.start` binds and listens on ``host:port`` with plain sockets
and returns at once, so the server's ready line (``wharf ready: ... http=HOST:PORT``) is not
held back by the import of aiohttp and the API modules (about a third of the broker's start-up,
docs/performance.md, "Start-up and idle memory"). From then on the port accepts connections:
the kernel completes them and queues them in the listening socket's backlog. A task started
with the listener waits for the first connection to arrive, or for ``load_after`` seconds
(:data:`LOAD_AFTER_S`) if none does, then imports :mod:`wharf.http.app` (and aiohttp), builds
the application and hands it the sockets; it then accepts the queued connections and serves
their requests. A request sent right after the ready line is therefore answered, only as late
as aiohttp takes to load. The import runs on the event loop, which the broker's other listeners
share: waiting for a first HTTP connection keeps it out of the way of the Kafka and AMQP
clients that connect as soon as the ready line is out (a test suite's first test), and the
timer loads it anyway on an idle broker, so that the first dashboard visit does not pay for it
and the idle broker's memory is what a serving one holds. If the application cannot start, the
error is logged and the sockets are closed: connections are refused rather than left waiting.

This module imports neither aiohttp nor the API, so that the composition root can hold it from
the start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wharf.core.broker import Broker
    from wharf.http.app import HttpServer
    from wharf.http.status import ServerView

__all__ = ["BACKLOG", "DEFAULT_MAX_BODY_BYTES", "HttpListener", "listen"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 4 << 20
BACKLOG = 128  # connections the kernel queues until they are accepted (aiohttp's default)
LOAD_AFTER_S = 0.5
"""Seconds after the listener starts when the application is loaded if no connection came
sooner."""


async def listen(host: str, port: int, backlog: int = BACKLOG) -> list[socket.socket]:
    """Listening, non-blocking sockets on every address ``host`` resolves to (every interface
    when it is empty), as ``loop.create_server`` binds them; port 0 picks a free port."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(
        host or None, port, family=socket.AF_UNSPEC, type=socket.SOCK_STREAM,
        flags=socket.AI_PASSIVE,
    )  # fmt: skip
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class HttpListener:
    """The HTTP front end as a server listener (``start``, ``stop_accepting``, ``close``)."""

    name = "http"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        server: ServerView | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        load_after: float = LOAD_AFTER_S,
    ) -> None:
        self.host = host
        self.requested_port = port
        self.server_view = server
        self.max_body_bytes = max_body_bytes
        self.load_after = load_after
        self._sockets: list[socket.socket] = []
        self._serving: asyncio.Task[None] | None = None
        self._http: HttpServer | None = None

    async def start(self, broker: Broker) -> list[tuple[str, str, int]]:
        """Listen, and start the task that loads the application and serves the sockets."""
        self._sockets = await listen(self.host, self.requested_port)
        port = int(self._sockets[0].getsockname()[1])
        self._serving = asyncio.create_task(self._serve(broker), name="wharf-http-start")
        return [(self.name, self.host, port)]

    @property
    def serving(self) -> bool:
        """Whether the application serves the port (false until aiohttp is loaded)."""
        return self._http is not None

    async def wait_serving(self) -> bool:
        """Wait until the application serves the port; false if it could not (it was logged)
        or the listener closed first."""
        if self._serving is not None:
            await asyncio.wait([self._serving])
        return self.serving

    async def _first_connection(self) -> None:
        """Return once a connection waits on one of the sockets (none is accepted here), or
        after ``load_after`` seconds."""
        loop = asyncio.get_running_loop()
        arrived = loop.create_future()

        def wake() -> None:
            if not arrived.done():
                arrived.set_result(None)

        descriptors = [sock.fileno() for sock in self._sockets]
        for descriptor in descriptors:
            loop.add_reader(descriptor, wake)
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.load_after):
                    await arrived
        finally:
            for descriptor in descriptors:
                loop.remove_reader(descriptor)

    async def _serve(self, broker: Broker) -> None:
        try:
            await self._first_connection()
            from wharf.http.app import serve_sockets

            self._http = await serve_sockets(
                broker, self._sockets, server=self.server_view, max_body_bytes=self.max_body_bytes
            )
        except Exception:
            log.exception("the HTTP API could not start; its port is closed")
            self._close_sockets()
        else:
            log.debug("the HTTP API serves port %d", self._http.port)

    async def stop_accepting(self) -> None:
        """Keep serving: the API stays reachable while the other listeners drain."""

    async def close(self, grace_s: float) -> None:
        """Running requests get :data:`~wharf.http.app.SHUTDOWN_GRACE_S` to finish, then
        connections close (the server's own ``grace_s`` deadline still bounds the whole call)."""
        if self._serving is not None:
            self._serving.cancel()
            await asyncio.gather(self._serving, return_exceptions=True)
            self._serving = None
        if self._http is not None:
            http, self._http = self._http, None
            await http.close()
        self._close_sockets()

    def _close_sockets(self) -> None:
        # once served, the loop owns them (uvloop detaches them, asyncio closes them: both
        # leave closing them again harmless); before that, they are closed here
        for sock in self._sockets:
            sock.close()
        self._sockets = []
