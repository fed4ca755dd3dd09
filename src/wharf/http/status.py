"""What the HTTP API needs to know about the running server, as structural types.

``http`` and ``server`` sit side by side in the layering and never import each other, so the
server hands :func:`wharf.http.app.start_http` an object that satisfies :class:`ServerView`
(listeners, live connections and request latencies) without either package naming the
other's classes.
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


class OperationLatencyView(Protocol):
    """Request latency of one protocol operation: ``counts[i]`` requests took at most
    ``buckets[i]`` seconds and more than ``buckets[i-1]`` (not cumulative); the last count is
    for longer ones."""

    @property
    def protocol(self) -> str: ...

    @property
    def operation(self) -> str: ...

    @property
    def buckets(self) -> Sequence[float]: ...

    @property
    def counts(self) -> Sequence[int]: ...

    @property
    def sum(self) -> float: ...

    @property
    def count(self) -> int: ...


class ServerView(Protocol):
    """The server's listeners, connections and request latencies."""

    def listeners(self) -> Sequence[ListenerView]: ...

    def connections(self) -> Sequence[ConnectionView]: ...

    def request_latencies(self) -> Sequence[OperationLatencyView]: ...

    async def close_connection(self, connection_id: str) -> bool:
        """Close one connection; False when no connection has that id."""
        ...
