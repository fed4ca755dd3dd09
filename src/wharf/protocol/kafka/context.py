"""What a Kafka handler knows besides the request: the broker and how the listener is reached."""

from __future__ import annotations

from dataclasses import dataclass

from wharf.core.broker import Broker

__all__ = ["KafkaContext"]


@dataclass(slots=True)
class KafkaContext:
    """One per connection (a copy of the listener's, with the client's address filled in)."""

    broker: Broker
    advertised_host: str
    advertised_port: int
    cluster_id: str = "wharf"
    client_host: str = ""
