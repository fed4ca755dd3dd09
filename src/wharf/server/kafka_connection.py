"""One Kafka client connection: an asyncio Protocol around the sans-I/O codec.

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
handler, is logged with the peer address and closes this connection; the broker stays up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import deque
from typing import Any, cast

from wharf.protocol.kafka.codec import (
    ApiVersionsFallback,
    KafkaRequest,
    ServerCodec,
    encode_response,
)
from wharf.protocol.kafka.context import KafkaContext
from wharf.protocol.kafka.dispatch import handle, handle_fallback
from wharf.protocol.kafka.errors import KafkaProtocolError
from wharf.protocol.kafka.framing import NEED_DATA

__all__ = ["KafkaConnection"]

log = logging.getLogger(__name__)

DEFAULT_MAX_IN_FLIGHT = 64
DEFAULT_MAX_IN_FLIGHT_BYTES = 64 << 20


class KafkaConnection(asyncio.Protocol):
    """Serves Kafka requests from one client socket."""

    def __init__(
        self,
        ctx: KafkaContext,
        connections: set[KafkaConnection],
        *,
        max_frame_bytes: int,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        max_in_flight_bytes: int = DEFAULT_MAX_IN_FLIGHT_BYTES,
    ) -> None:
        self._ctx = ctx
        self._connections = connections
        self._codec = ServerCodec(max_frame_bytes)
        self._max_in_flight = max_in_flight
        self._max_in_flight_bytes = max_in_flight_bytes
        self._pending_bytes = 0
        self._transport: asyncio.Transport | None = None
        self._peer = "?"
        # One entry per request awaiting its turn: the handler task (None: no response wanted).
        self._pending: deque[tuple[int, int, asyncio.Future[Any]]] = deque()
        self._reading_paused = False
        self._writing_paused = False
        self._closed = False
        self._draining = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def peer(self) -> str:
        """The client's address, ``host:port`` (for logs and the HTTP API)."""
        return self._peer

    # -- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self._transport = cast(asyncio.Transport, transport)
        peer = self._transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self._peer = f"{peer[0]}:{peer[1]}"
            self._ctx = dataclasses.replace(self._ctx, client_host=str(peer[0]))
        else:
            self._peer = str(peer)
        self._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._connections.discard(self)
        for _, _, task in self._pending:
            task.cancel()
        self._pending.clear()
        self._pending_bytes = 0
        self._idle.set()

    def data_received(self, data: bytes) -> None:
        if self._closed:
            return
        self._codec.receive_data(data)
        try:
            while True:
                event = self._codec.next_event()
                if event is NEED_DATA:
                    break
                self._start(event)
        except KafkaProtocolError as exc:
            self.close(f"{type(exc).__name__} (error code {int(exc.code)}): {exc}")
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
        if isinstance(event, ApiVersionsFallback):
            task: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            task.set_result(handle_fallback(event))
        else:
            task = asyncio.ensure_future(handle(self._ctx, event))
        size = event.size if isinstance(event, KafkaRequest) else 0
        self._pending.append((event.correlation_id, size, task))
        self._pending_bytes += size
        self._idle.clear()
        task.add_done_callback(self._on_done)

    def _on_done(self, _: asyncio.Future[Any]) -> None:
        transport = self._transport
        while self._pending and self._pending[0][2].done():
            correlation_id, size, task = self._pending.popleft()
            self._pending_bytes -= size
            if task.cancelled():
                return
            exc = task.exception()
            if exc is not None:
                log.error("kafka %s: request %d failed", self._peer, correlation_id, exc_info=exc)
                self.close(f"internal error serving request {correlation_id}: {exc!r}")
                return
            response = task.result()
            if response is not None and transport is not None and not self._closed:
                transport.write(encode_response(correlation_id, response))
        if not self._pending:
            self._idle.set()
        self._update_reading()

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

    def close(self, reason: str, *, level: int = logging.WARNING) -> None:
        """Close this connection, logging why."""
        if self._closed:
            return
        log.log(level, "kafka %s: closing connection: %s", self._peer, reason)
        self._closed = True
        for _, _, task in self._pending:
            task.cancel()
        self._pending.clear()
        self._pending_bytes = 0
        self._idle.set()
        if self._transport is not None:
            self._transport.close()
