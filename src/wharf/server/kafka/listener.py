"""The Kafka listener: a TCP server whose connections speak the Kafka protocol.

Two ways in:

* ``await start_kafka_listener(broker, host, port)`` binds and serves at once and returns the
  :class:`KafkaListener` (embedding, tests);
* ``KafkaListener.from_settings(settings)`` is the factory ``wharf serve`` uses; the server
  then drives it through the :class:`~wharf.server.listener.Listener` calls (``start``,
  ``stop_accepting``, ``close``).

The address Metadata and FindCoordinator advertise defaults to the bound one; when the listener
binds every interface (``0.0.0.0``, ``::``) it is the machine's host name instead, since
clients cannot connect to a wildcard address.

Its connections time every request they serve into the broker's ``stats.requests`` under
``kafka`` and the API name (read by ``/metrics``); ``connections`` holds the open connections
(listed and closed by the HTTP API).

With ``sasl_plain`` clients must authenticate with SASL PLAIN (the broker's users, as for
AMQP) before anything but ApiVersions; see :mod:`wharf.protocol.kafka.handlers.sasl`.

Idle connections are closed as Kafka's ``connections.max.idle.ms`` does: a sweep runs every
quarter of ``max_idle_ms`` (at most every 30 s) and closes, with the reason logged, each
connection that has had no request pending and no bytes in or out for that long. Clients
reconnect when they next need the broker. The sweep is a timer on the broker's clock that
schedules the next one (cancelled when the listener stops accepting), and idleness is measured
on that clock's monotonic reading, so a test moves both with a virtual clock.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence

from wharf.core.broker import Broker
from wharf.core.clock import Clock, TimerHandle
from wharf.protocol.kafka.context import KafkaContext
from wharf.protocol.kafka.framing import DEFAULT_MAX_FRAME_BYTES
from wharf.server.kafka.adapter import KafkaAdapter
from wharf.server.settings import ServerSettings

__all__ = ["KafkaListener", "start_kafka_listener"]

log = logging.getLogger(__name__)

Endpoint = tuple[str, str, int]

_WILDCARDS = frozenset({"", "0.0.0.0", "::"})
# Kafka's connections.max.idle.ms default: 10 minutes.
DEFAULT_MAX_IDLE_MS = 600_000


def default_advertised_host(host: str) -> str:
    """What to tell clients when no advertised host is configured."""
    return socket.gethostname() if host in _WILDCARDS else host


class KafkaListener:
    """A Kafka front end on one ``host:port``; see the module docstring."""

    name = "kafka"

    def __init__(
        self,
        host: str,
        port: int,
        *,
        advertised_host: str | None = None,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        max_idle_ms: int = DEFAULT_MAX_IDLE_MS,
        sasl_plain: bool = False,
    ) -> None:
        self.host = host
        self.sasl_plain = sasl_plain  # clients must authenticate (SASL PLAIN) first
        self.requested_port = port
        self.advertised_host = advertised_host or default_advertised_host(host)
        self.max_frame_bytes = max_frame_bytes
        self.max_idle_ms = max_idle_ms  # 0: never close idle connections
        self.connections: set[KafkaAdapter] = set()
        self._sweeper: TimerHandle | None = None
        self._server: asyncio.Server | None = None
        self._port: int | None = None

    @classmethod
    def from_settings(cls, settings: ServerSettings) -> KafkaListener:
        """The factory ``wharf serve`` calls."""
        return cls(
            settings.host,
            settings.kafka_port,
            advertised_host=settings.advertised_host,
            max_idle_ms=settings.kafka_connections_max_idle_ms,
            sasl_plain=settings.kafka_sasl_plain,
        )

    @property
    def port(self) -> int:
        """The bound port (useful when listening on port 0)."""
        assert self._port is not None, "listener not started"
        return self._port

    async def start(self, broker: Broker) -> Sequence[Endpoint]:
        """Bind and start serving; returns the bound address."""
        loop = asyncio.get_running_loop()
        base = KafkaContext(
            broker=broker,
            advertised_host=self.advertised_host,
            advertised_port=0,
            sasl_required=self.sasl_plain,
        )

        def connection() -> KafkaAdapter:
            return KafkaAdapter(
                base,
                self.connections,
                max_frame_bytes=self.max_frame_bytes,
            )

        self._server = await loop.create_server(connection, self.host, self.requested_port)
        self._port = int(self._server.sockets[0].getsockname()[1])
        base.advertised_port = self._port
        if self.max_idle_ms > 0:
            self._schedule_sweep(broker.clock)
        return [(self.name, self.host, self.port)]

    def _schedule_sweep(self, clock: Clock) -> None:
        period_s = min(self.max_idle_ms / 4000, 30.0)
        self._sweeper = clock.call_later(period_s, lambda: self._close_idle_connections(clock))

    def _close_idle_connections(self, clock: Clock) -> None:
        self._schedule_sweep(clock)
        limit_s = self.max_idle_ms / 1000
        now = clock.monotonic()
        for connection in list(self.connections):
            if connection.idle_seconds(now) >= limit_s:
                connection.close(
                    f"idle for more than {self.max_idle_ms} ms "
                    f"(server.kafka_connections_max_idle_ms)"
                )

    async def stop_accepting(self) -> None:
        """Close the listening socket; open connections go on."""
        if self._server is not None:
            self._server.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None

    async def close(self, grace_s: float = 5.0) -> None:
        """Let connections finish their in-flight requests for up to ``grace_s``, then close."""
        await self.stop_accepting()
        connections = list(self.connections)
        if connections:
            await asyncio.wait(
                [asyncio.ensure_future(c.drain()) for c in connections], timeout=grace_s
            )
        for connection in list(self.connections):
            connection.close("server shutting down")
        if self._server is not None:
            await self._server.wait_closed()


async def start_kafka_listener(
    broker: Broker,
    host: str,
    port: int,
    *,
    advertised_host: str | None = None,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    max_idle_ms: int = DEFAULT_MAX_IDLE_MS,
    sasl_plain: bool = False,
) -> KafkaListener:
    """Bind ``host:port`` and serve Kafka clients from ``broker``."""
    listener = KafkaListener(
        host,
        port,
        advertised_host=advertised_host,
        max_frame_bytes=max_frame_bytes,
        max_idle_ms=max_idle_ms,
        sasl_plain=sasl_plain,
    )
    await listener.start(broker)
    log.info("kafka listener on %s:%d", host, listener.port)
    return listener
