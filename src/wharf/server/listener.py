"""What the server process expects from each front end (Kafka, AMQP, HTTP).

A listener has a ``name`` ("kafka", "amqp", "http"); a factory creates it from the
:class:`ServerSettings` (so it can read its own port, host and options); the server then drives
it through three calls:

1. ``await start(broker)`` binds its sockets, listens and returns every address it bound as
   ``(name, host, port)`` with the real port (settings may say port 0: "pick a free port").
   From then on its ports accept connections, which the ready line promises: most front ends
   serve them at once; the HTTP one serves them as soon as it has loaded aiohttp, which it
   does at its first connection (queued by the kernel until then; :mod:`wharf.http.listener`).
   An ``OSError`` here (address in use, permission) stops the whole server with a clear
   message.
2. ``await stop_accepting()`` on shutdown: close the listening sockets; open connections go on.
3. ``await close(grace_s)``: ask open connections to finish (complete in-flight requests, let
   pending writes commit, send the protocol's close), wait at most ``grace_s`` seconds, then abort
   whatever is left. The server cancels ``close`` if it overruns the grace period by much.

The protocol is structural: front ends outside ``wharf.server`` (the HTTP API) satisfy it without
importing this module. Endpoints are plain tuples for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol

from wharf.server.settings import ServerSettings

if TYPE_CHECKING:  # the broker (and all of core) loads only when a server really starts
    from wharf.core.broker import Broker

__all__ = ["Endpoint", "Listener", "ListenerFactory"]

Endpoint = tuple[str, str, int]  # (listener name, bound host, bound port)


class Listener(Protocol):
    """One front end of the server; see the module docstring for the call order."""

    @property
    def name(self) -> str:
        """Short protocol name ("kafka", "amqp", "http") used in logs and the ready line."""
        ...

    async def start(self, broker: Broker) -> Sequence[Endpoint]: ...

    async def stop_accepting(self) -> None: ...

    async def close(self, grace_s: float) -> None: ...


ListenerFactory = Callable[[ServerSettings], Listener]
