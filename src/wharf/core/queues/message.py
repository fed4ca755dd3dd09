"""A published message as the queue side of the broker holds it.

The property list is kept as the exact wire bytes (flags + fields) so that consumers receive
what the publisher sent; only the fields routing and queueing act on are parsed (see
:mod:`wharf.core.queues.properties`). The headers table is decoded lazily, on first use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from wharf.core.queues import properties as props

__all__ = ["Message"]


class Message:
    """Exchange, routing key, property bytes and body of one published message.

    Build one from the wire with ``Message(exchange, routing_key, properties, body)`` (raises
    :class:`~wharf.core.queues.properties.MalformedPropertiesError` or
    :class:`~wharf.errors.PreconditionError` for a bad expiration) or from plain values with
    :meth:`build`. Instances are treated as immutable: edits return a new ``Message``.
    """

    __slots__ = (
        "_headers",
        "_scanned",
        "body",
        "exchange",
        "properties",
        "routing_key",
    )

    def __init__(self, exchange: str, routing_key: str, properties: bytes, body: bytes) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.properties = properties
        self.body = body
        self._scanned = props.scan(properties)
        self._headers: dict[str, Any] | None = None

    @classmethod
    def build(
        cls,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        headers: Mapping[str, Any] | None = None,
        persistent: bool = False,
        priority: int | None = None,
        expiration_ms: int | None = None,
        **other: Any,
    ) -> Message:
        """A message from plain values; ``other`` takes the remaining AMQP property names
        (content_type, correlation_id, reply_to, message_id, timestamp, type, app_id, ...)."""
        raw = props.encode_properties(
            headers=headers,
            delivery_mode=2 if persistent else None,
            priority=priority,
            expiration=None if expiration_ms is None else str(expiration_ms),
            **other,
        )
        return cls(exchange, routing_key, raw, body)

    @property
    def persistent(self) -> bool:
        """delivery-mode 2."""
        return self._scanned.delivery_mode == 2

    @property
    def priority(self) -> int:
        """The priority property, 0 when absent."""
        return self._scanned.priority or 0

    @property
    def expiration_ms(self) -> int | None:
        """The per-message TTL from the expiration property, if any."""
        return self._scanned.expiration_ms

    @property
    def user_id(self) -> str | None:
        return self._scanned.user_id

    @property
    def has_headers(self) -> bool:
        return self._scanned.headers_span is not None

    @property
    def headers(self) -> dict[str, Any]:
        """The decoded headers table (empty if absent); do not mutate, use :meth:`with_headers`."""
        if self._headers is None:
            self._headers = props.decode_headers(self.properties, self._scanned)
        return self._headers

    @property
    def size(self) -> int:
        """Body size in bytes (what x-max-length-bytes counts, as in RabbitMQ)."""
        return len(self.body)

    def with_headers(self, set_: Mapping[str, Any], remove: Iterable[str] = ()) -> Message:
        """A copy whose headers have ``set_`` applied and ``remove`` dropped."""
        raw = props.replace_headers(self.properties, self._scanned, set_, remove)
        return Message(self.exchange, self.routing_key, raw, self.body)

    def without_expiration(self) -> Message:
        """A copy without the expiration property (kept in x-death as original-expiration)."""
        raw = props.drop_expiration(self.properties, self._scanned)
        return Message(self.exchange, self.routing_key, raw, self.body)

    @property
    def expiration_text(self) -> str | None:
        """The expiration property exactly as sent."""
        span = self._scanned.expiration_span
        if span is None:
            return None
        return self.properties[span[0] + 1 : span[1]].decode("ascii", "replace")

    def with_route(self, exchange: str, routing_key: str) -> Message:
        """The same properties and body published again to another exchange/key."""
        copy = Message.__new__(Message)
        copy.exchange = exchange
        copy.routing_key = routing_key
        copy.properties = self.properties
        copy.body = self.body
        copy._scanned = self._scanned
        copy._headers = self._headers
        return copy

    def __repr__(self) -> str:
        return (
            f"Message(exchange={self.exchange!r}, routing_key={self.routing_key!r}, "
            f"body={self.body[:32]!r}{'...' if len(self.body) > 32 else ''})"
        )
