"""Where an AMQP connection reports how long its requests took.

The server adapter hands the connection an object with an ``observe(operation, seconds)``
method (the listener's request statistics); this package never imports it, it only needs the
method. Operation names are pamqp's method names (``Queue.Declare``, ``Basic.Publish``).
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["RequestObserver"]


class RequestObserver(Protocol):
    """Counts one request of ``operation`` that took ``seconds``."""

    def observe(self, operation: str, seconds: float) -> None: ...
