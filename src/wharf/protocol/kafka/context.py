"""What a Kafka handler knows besides the request: the broker, how the listener is reached, and
the connection's SASL state."""

from __future__ import annotations

from dataclasses import dataclass, field

from wharf.core.broker import Broker

__all__ = ["KafkaContext", "SaslSession"]


@dataclass(slots=True)
class SaslSession:
    """Where one connection stands in SASL authentication
    (see :mod:`wharf.protocol.kafka.handlers.sasl`)."""

    mechanism: str | None = None  # chosen by SaslHandshake
    user: str | None = None  # set once SaslAuthenticate succeeded
    # Set by a handler whose response must be the connection's last: the reason to close.
    close_after_response: str | None = None


@dataclass(slots=True)
class KafkaContext:
    """One per connection (a copy of the listener's, with the client's address and a fresh
    :class:`SaslSession` filled in)."""

    broker: Broker
    advertised_host: str
    advertised_port: int
    cluster_id: str = "wharf"
    client_host: str = ""
    # Clients must authenticate with SASL PLAIN before any request but ApiVersions.
    sasl_required: bool = False
    session: SaslSession = field(default_factory=SaslSession)
