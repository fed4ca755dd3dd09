"""The Kafka adapter: one client connection, an asyncio Protocol around the sans-I/O codec.

How it works: ``data_received`` feeds the :class:`~wharf.protocol.kafka.codec.ServerCodec` and
starts one task per decoded request, in arrival order. Kafka requires responses in request
order on a connection, so each request gets a slot in ``_pending`` and responses leave from the
head of that queue only (a fast Metadata answer waits behind a slow long-poll Fetch sent before
it). Requests still run concurrently, so several in-flight Produce requests share one group
commit fsync.

Flow control: reading pauses while ``max_in_flight`` requests, or ``max_in_flight_bytes`` of
request bytes, wait for their responses, or while the transport's write buffer is above its
high-water mark (``pause_writing``), and resumes once they have drained: backpressure instead
of unbounded buffers.

This class is the one place per connection that turns failures into outcomes: a
:class:`~wharf.protocol.kafka.errors.KafkaProtocolError` from the codec, or any exception from a
handler, closes this connection with the reason logged; the broker stays up. A
:class:`~wharf.server.logging_setup.ConnectionLog` writes one line when the connection opens and
one when it closes (a warning with the reason unless the client closed it).

Figures: each request is timed from its decoding to its response being written (so a response
waiting behind a long-poll Fetch counts that wait, as the client sees it) into the broker's
``stats.requests`` (:mod:`wharf.core.stats`) under its API name; the connection counts its
requests and bytes in and out and keeps the client id of the latest request header, for the
HTTP API's connection list.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from functools import cache
from time import perf_counter
from typing import Any, cast

from kio.index import load_request_schema

from wharf.protocol.kafka.codec import (
    ApiVersionsFallback,
    KafkaRequest,
    ServerCodec,
    encode_response,
)
from wharf.protocol.kafka.context import KafkaContext, SaslSession
from wharf.protocol.kafka.errors import KafkaProtocolError
from wharf.protocol.kafka.framing import NEED_DATA
from wharf.protocol.kafka.handlers import handle, handle_fallback
from wharf.server.logging_setup import ConnectionLog

__all__ = ["KafkaAdapter"]

log = logging.getLogger(__name__)

DEFAULT_MAX_IN_FLIGHT = 64
DEFAULT_MAX_IN_FLIGHT_BYTES = 64 << 20


@cache
def operation_name(api_key: int, api_version: int) -> str:
    """The API's name as Kafka spells it (``Produce``, ``Fetch``, ``Metadata``)."""
    return load_request_schema(api_key, api_version).__name__.removesuffix("Request")


class KafkaAdapter(asyncio.Protocol):
    """Serves Kafka requests from one client socket."""

    def __init__(
        self,
        ctx: KafkaContext,
        connections: set[KafkaAdapter],
        *,
        max_frame_bytes: int,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        max_in_flight_bytes: int = DEFAULT_MAX_IN_FLIGHT_BYTES,
    ) -> None:
        self._ctx = ctx
        self._connections = connections
        self._stats = ctx.broker.stats.request_timer("kafka")
        self._log: ConnectionLog | None = None
        self._client_id = ""
        self._requests = 0
        self._bytes_in = 0
        self._bytes_out = 0
        self._codec = ServerCodec(max_frame_bytes)
        self._max_in_flight = max_in_flight
        self._max_in_flight_bytes = max_in_flight_bytes
        self._pending_bytes = 0
        self._transport: asyncio.Transport | None = None
        self._peer = "?"
        # One entry per request awaiting its turn: correlation id, request bytes, the handler
        # task (its result None: no response wanted), API name, perf_counter() at decoding.
        self._pending: deque[tuple[int, int, asyncio.Future[Any], str, float]] = deque()
        self._reading_paused = False
        self._writing_paused = False
        self._closed = False
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        # The broker clock's monotonic() at the last bytes received or response sent (for the
        # listener's idle timeout).
        self._clock = ctx.broker.clock
        self._last_active = self._clock.monotonic()

    @property
    def peer(self) -> str:
        """The client's address, ``host:port`` (``[host]:port`` for IPv6)."""
        return self._peer

    @property
    def id(self) -> str:
        """``kafka-<n>``, with the number the connection's log lines carry (``conn=<n>``)."""
        return f"kafka-{self._log.id}" if self._log is not None else "kafka-?"

    @property
    def client_id(self) -> str:
        """The client id of the latest request header ("" before the first request)."""
        return self._client_id

    @property
    def connected_since_ms(self) -> int | None:
        """Wall-clock time the connection was accepted, in ms since the epoch."""
        return self._log.opened_at_ms if self._log is not None else None

    @property
    def requests(self) -> int:
        """Requests decoded so far."""
        return self._requests

    @property
    def bytes_in(self) -> int:
        """Bytes received from the client."""
        return self._bytes_in

    @property
    def bytes_out(self) -> int:
        """Response bytes written to the client."""
        return self._bytes_out

    def _figures(self) -> dict[str, object]:
        return {
            "client_id": self._client_id,
            "requests": self._requests,
            "bytes_in": self._bytes_in,
            "bytes_out": self._bytes_out,
        }

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        self._log = ConnectionLog("kafka", transport)
        self._peer = self._log.peer
        peer = self._transport.get_extra_info("peername")
        host = str(peer[0]) if isinstance(peer, tuple) else ""
        self._ctx = dataclasses.replace(self._ctx, client_host=host, session=SaslSession())
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._connections.discard(self)
        for _, _, task, _, _ in self._pending:
            task.cancel()
        self._pending.clear()
        self._pending_bytes = 0
        self._idle.set()
        if self._log is not None:  # already logged (with its reason) if the server closed it
            self._log.closed("connection lost" if exc else None, exc, details=self._figures())

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._last_active = self._clock.monotonic()
        self._bytes_in += len(data)
        self._codec.receive_data(data)
        try:
            while True:
                event = self._codec.next_event()
                if event is NEED_DATA:
                    break
                self._start(event)
        except KafkaProtocolError as exc:
            self.close(f"protocol error: {type(exc).__name__} (error code {int(exc.code)}): {exc}")
            return
        self._update_reading()

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self._writing_paused = True
        self._update_reading()

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._update_reading()

    # -- requests and responses -------------------------------------------------------------

    def _start(self, event: KafkaRequest | ApiVersionsFallback) -> None:
        started = perf_counter()
        if isinstance(event, ApiVersionsFallback):
            task: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            task.set_result(handle_fallback(event))
            size = 0
            operation = "ApiVersions"
        else:
            task = asyncio.ensure_future(handle(self._ctx, event))
            size = event.size
            operation = operation_name(event.api_key, event.api_version)
        if event.client_id is not None:
            self._client_id = event.client_id
        self._requests += 1
        self._pending.append((event.correlation_id, size, task, operation, started))
        self._pending_bytes += size
        self._idle.clear()
        task.add_done_callback(self._on_done)

    def _on_done(self, _: asyncio.Future[Any]) -> None:
        transport = self._transport
        while self._pending and self._pending[0][2].done():
            correlation_id, size, task, operation, started = self._pending.popleft()
            self._pending_bytes -= size
            if task.cancelled():
                return
            exc = task.exception()
            if isinstance(exc, KafkaProtocolError):  # e.g. a request before authentication
                self.close(f"protocol error: {type(exc).__name__} (error code {int(exc.code)}): "
                           f"{exc}")
                return
            if exc is not None:
                log.error(
                    "kafka %s: %s request %d failed",
                    self._peer,
                    operation,
                    correlation_id,
                    exc_info=exc,
                )
                self.close(f"internal error serving {operation} request {correlation_id}: {exc!r}")
                return
            response = task.result()
            if response is not None and transport is not None and not self._closed:
                frame = encode_response(correlation_id, response)
                self._bytes_out += len(frame)
                transport.write(frame)
                self._last_active = self._clock.monotonic()
            last_words = self._ctx.session.close_after_response
            if last_words is not None:
                self.close(last_words)
                return
            self._stats.observe(operation, perf_counter() - started)
        if not self._pending:
            self._idle.set()
        self._update_reading()

    def idle_seconds(self, now: float) -> float:
        """How long (by the broker clock's ``monotonic()``, which ``now`` is) nothing came in or
        went out while no request was pending; 0 while one is (a long-poll Fetch is not
        idleness)."""
        if self._pending:
            return 0.0
        return now - self._last_active

    async def drain(self) -> None:
        """Wait until every request received so far has been answered."""
        self._draining = True
        self._update_reading()
        await self._idle.wait()

    def _update_reading(self) -> None:
        transport = self._transport
        if transport is None or self._closed:
            return
        busy = (
            self._draining
            or self._writing_paused
            or len(self._pending) >= self._max_in_flight
            or self._pending_bytes >= self._max_in_flight_bytes
        )
        if busy and not self._reading_paused:
            self._reading_paused = True
            transport.pause_reading()
        elif not busy and self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()

    def close(self, reason: str) -> None:
        """Close this connection, logging why (a warning: the client did not ask for it)."""
        if self._closed:
            return
        if self._log is not None:
            self._log.closed(reason, details=self._figures())
        self._closed = True
        for _, _, task, _, _ in self._pending:
            task.cancel()
        self._pending.clear()
        self._pending_bytes = 0
        self._idle.set()
        if self._transport is not None:
            self._transport.close()
