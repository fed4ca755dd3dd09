"""The HTTP listener of ``wharf serve``, wired to a view of the server's other listeners.

How it works: ``wharf.http`` and ``wharf.server`` never import each other, so this module (in
the composition root's layer) joins them. :class:`ListenerRegistry` wraps each listener factory
of ``wharf serve`` so that every listener it creates is recorded along with the addresses its
``start`` bound; the HTTP listener gets the registry as its
:class:`~wharf.http.status.ServerView` and reports those listeners (ready from a successful
start until ``stop_accepting``) and the client connections of the Kafka and AMQP listeners.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wharf.core.broker import Broker
from wharf.http.listener import HttpListener
from wharf.http.status import ConnectionView
from wharf.server.amqp.adapter import AMQPAdapter
from wharf.server.amqp.listener import AMQPListener
from wharf.server.kafka.adapter import KafkaAdapter
from wharf.server.kafka.listener import KafkaListener
from wharf.server.listener import Endpoint, Listener, ListenerFactory
from wharf.server.settings import ServerSettings


@dataclass(frozen=True)
class _Bound:
    name: str
    host: str
    port: int
    ready: bool


class _Tracked:
    """A listener that remembers what it bound and whether it still accepts."""

    def __init__(self, inner: Listener) -> None:
        self.inner = inner
        self.endpoints: list[Endpoint] = []
        self.accepting = False

    @property
    def name(self) -> str:
        return self.inner.name

    async def start(self, broker: Broker) -> Sequence[Endpoint]:
        self.endpoints = list(await self.inner.start(broker))
        self.accepting = True
        return self.endpoints

    async def stop_accepting(self) -> None:
        self.accepting = False
        await self.inner.stop_accepting()

    async def close(self, grace_s: float) -> None:
        self.accepting = False
        await self.inner.close(grace_s)


class ListenerRegistry:
    """Listeners of one server run, as the HTTP API's :class:`ServerView`."""

    def __init__(self) -> None:
        self._tracked: list[_Tracked] = []

    def track(self, factory: ListenerFactory) -> ListenerFactory:
        """``factory`` whose listeners are recorded here."""

        def make(settings: ServerSettings) -> Listener:
            tracked = _Tracked(factory(settings))
            self._tracked.append(tracked)
            return tracked

        return make

    def http_factory(self, settings: ServerSettings) -> Listener:
        """The HTTP listener, itself tracked, reporting every tracked listener."""
        return self.track(lambda s: HttpListener(s.host, s.http_port, server=self))(settings)

    def listeners(self) -> Sequence[_Bound]:
        return [
            _Bound(name, host, port, tracked.accepting)
            for tracked in self._tracked
            for name, host, port in tracked.endpoints
        ]

    def connections(self) -> Sequence[ConnectionView]:
        return [conn for conn, _ in self._live_connections()]

    async def close_connection(self, connection_id: str) -> bool:
        for conn, close in self._live_connections():
            if conn.id == connection_id:
                close()
                return True
        return False

    def _live_connections(self) -> list[tuple[_Connection, Callable[[], None]]]:
        found: list[tuple[_Connection, Callable[[], None]]] = []
        for tracked in self._tracked:
            listener = tracked.inner
            if isinstance(listener, AMQPListener):
                found.extend(_amqp_connections(listener))
            elif isinstance(listener, KafkaListener):
                found.extend(_kafka_connections(listener))
        return found


@dataclass(frozen=True)
class _Connection:
    id: str
    protocol: str
    peer: str
    client_id: str
    user: str | None
    vhost: str | None
    connected_since_ms: int | None = None
    requests: int | None = None
    bytes_in: int | None = None
    bytes_out: int | None = None


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return "" if value is None else str(value)


def _amqp_connections(
    listener: AMQPListener,
) -> list[tuple[_Connection, Callable[[], None]]]:
    found: list[tuple[_Connection, Callable[[], None]]] = []
    for adapter in list(listener.connections):
        conn = adapter.conn
        if conn is None or conn.closed:
            continue
        props = conn.client_properties
        client = _text(props.get("connection_name") or props.get("product"))
        info = _Connection(
            adapter.id,
            "amqp",
            conn.peer,
            client,
            conn.username or None,
            conn.vhost_name,
            adapter.connected_since_ms,
            adapter.requests,
            adapter.bytes_in,
            adapter.bytes_out,
        )

        def close(adapter: AMQPAdapter = adapter) -> None:
            adapter.close_from_server("closed by an operator")

        found.append((info, close))
    return found


def _kafka_connections(
    listener: KafkaListener,
) -> list[tuple[_Connection, Callable[[], None]]]:
    found: list[tuple[_Connection, Callable[[], None]]] = []
    for connection in list(listener.connections):
        info = _Connection(
            connection.id,
            "kafka",
            connection.peer,
            connection.client_id,
            None,
            None,
            connection.connected_since_ms,
            connection.requests,
            connection.bytes_in,
            connection.bytes_out,
        )

        def close(connection: KafkaAdapter = connection) -> None:
            connection.close("closed by an operator")

        found.append((info, close))
    return found


def with_http(factories: Sequence[ListenerFactory]) -> list[ListenerFactory]:
    """``factories`` (tracked) followed by the HTTP listener that reports on them."""
    registry = ListenerRegistry()
    return [*(registry.track(factory) for factory in factories), registry.http_factory]
