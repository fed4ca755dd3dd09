"""What the HTTP API needs to know about the running server, as structural types.

``http`` and ``server`` sit side by side in the layering and never import each other, so the
server hands :func:`wharf.http.app.start_http` an object that satisfies :class:`ServerView`
(listeners and live connections) without either package naming the other's classes. (Request
latencies need no view: the listeners record them into the broker's ``stats``.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol


class ListenerView(Protocol):
    """One listening socket (Kafka, AMQP, HTTP)."""

    @property
    def name(self) -> str: ...

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...

    @property
    def ready(self) -> bool: ...


class ConnectionView(Protocol):
    """One client connection as the server tracks it; ``None`` where a listener keeps no
    such figure."""

    @property
    def id(self) -> str: ...

    @property
    def protocol(self) -> str: ...

    @property
    def peer(self) -> str: ...

    @property
    def client_id(self) -> str: ...

    @property
    def user(self) -> str | None: ...

    @property
    def vhost(self) -> str | None: ...

    @property
    def connected_since_ms(self) -> int | None:
        """Wall-clock time the connection was accepted, ms since the epoch."""
        ...

    @property
    def requests(self) -> int | None: ...

    @property
    def bytes_in(self) -> int | None: ...

    @property
    def bytes_out(self) -> int | None: ...


class ServerView(Protocol):
    """The server's listeners and connections."""

    def listeners(self) -> Sequence[ListenerView]: ...

    def connections(self) -> Sequence[ConnectionView]: ...

    async def close_connection(self, connection_id: str) -> bool:
        """Close one connection; False when no connection has that id."""
        ...
