"""Queue declaration arguments (``x-...``): validation and the parsed form queues act on.

RabbitMQ checks the type and range of each argument it knows and answers 406
PRECONDITION_FAILED on a bad value, and on a redeclare whose known arguments differ from those
the queue was created with; unknown arguments are kept but take no part in either check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from wharf.errors import InvalidArgumentError, PreconditionError

__all__ = ["Overflow", "QueueArgs", "QueueType", "parse_queue_args"]

MAX_PRIORITY_CAP = 255


class Overflow(StrEnum):
    DROP_HEAD = "drop-head"
    REJECT_PUBLISH = "reject-publish"
    REJECT_PUBLISH_DLX = "reject-publish-dlx"


class QueueType(StrEnum):
    CLASSIC = "classic"
    QUORUM = "quorum"


@dataclass(frozen=True, slots=True)
class QueueArgs:
    """The arguments a queue acts on, already validated."""

    max_priority: int | None = None
    message_ttl_ms: int | None = None
    expires_ms: int | None = None
    dead_letter_exchange: str | None = None
    dead_letter_routing_key: str | None = None
    max_length: int | None = None
    max_length_bytes: int | None = None
    overflow: Overflow = Overflow.DROP_HEAD
    single_active_consumer: bool = False
    delivery_limit: int | None = None
    queue_type: QueueType = QueueType.CLASSIC


class InvalidQueueArgumentError(PreconditionError, InvalidArgumentError):
    """An x-argument whose value can never be valid: AMQP's PRECONDITION_FAILED (406), as in
    RabbitMQ, and a bad request (400) to the HTTP API."""


def _int(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidQueueArgumentError(f"invalid arg '{name}': {value!r} is not an integer")
    if value < minimum:
        raise InvalidQueueArgumentError(f"invalid arg '{name}': {value} is less than {minimum}")
    return value


def _str(name: str, value: Any) -> str:
    if isinstance(value, bytes | bytearray):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidQueueArgumentError(f"invalid arg '{name}': not UTF-8") from None
    if not isinstance(value, str):
        raise InvalidQueueArgumentError(f"invalid arg '{name}': {value!r} is not a string")
    return value


def _bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise InvalidQueueArgumentError(f"invalid arg '{name}': {value!r} is not a boolean")
    return value


def _enum(name: str, value: Any, kind: type[Overflow] | type[QueueType]) -> Any:
    text = _str(name, value)
    try:
        return kind(text)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise InvalidQueueArgumentError(
            f"invalid arg '{name}': {text!r} is not one of {allowed}"
        ) from None


def parse_queue_args(args: Mapping[str, Any]) -> QueueArgs:
    """Validate ``args`` (as decoded from the wire); raises InvalidQueueArgumentError (a
    PreconditionError) like RabbitMQ."""
    fields: dict[str, Any] = {}
    for name, value in args.items():
        if name == "x-max-priority":
            fields["max_priority"] = min(_int(name, value, minimum=0), MAX_PRIORITY_CAP)
        elif name == "x-message-ttl":
            fields["message_ttl_ms"] = _int(name, value, minimum=0)
        elif name == "x-expires":
            fields["expires_ms"] = _int(name, value, minimum=1)
        elif name == "x-dead-letter-exchange":
            fields["dead_letter_exchange"] = _str(name, value)
        elif name == "x-dead-letter-routing-key":
            fields["dead_letter_routing_key"] = _str(name, value)
        elif name == "x-max-length":
            fields["max_length"] = _int(name, value, minimum=0)
        elif name == "x-max-length-bytes":
            fields["max_length_bytes"] = _int(name, value, minimum=0)
        elif name == "x-overflow":
            fields["overflow"] = _enum(name, value, Overflow)
        elif name == "x-single-active-consumer":
            fields["single_active_consumer"] = _bool(name, value)
        elif name == "x-delivery-limit":
            fields["delivery_limit"] = _int(name, value, minimum=0)
        elif name == "x-queue-type":
            fields["queue_type"] = _enum(name, value, QueueType)
    if "dead_letter_routing_key" in fields and "dead_letter_exchange" not in fields:
        raise InvalidQueueArgumentError(
            "invalid arg 'x-dead-letter-routing-key': requires x-dead-letter-exchange"
        )
    return QueueArgs(**fields) if fields else _NO_ARGUMENTS


# What most queues have: one shared instance (it is frozen).
_NO_ARGUMENTS = QueueArgs()


# QueueArgs field -> the x-argument that sets it, for messages naming what differs
_ARGUMENT_NAMES = {
    "max_priority": "x-max-priority",
    "message_ttl_ms": "x-message-ttl",
    "expires_ms": "x-expires",
    "dead_letter_exchange": "x-dead-letter-exchange",
    "dead_letter_routing_key": "x-dead-letter-routing-key",
    "max_length": "x-max-length",
    "max_length_bytes": "x-max-length-bytes",
    "overflow": "x-overflow",
    "single_active_consumer": "x-single-active-consumer",
    "delivery_limit": "x-delivery-limit",
    "queue_type": "x-queue-type",
}
_DEFAULTS = QueueArgs()


def _shown(value: Any, default: Any) -> str:
    if value == default and default in (None, False):
        return "none" if default is None else "false"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Overflow | QueueType):
        return value.value
    return str(value)


def first_difference(current: QueueArgs, received: QueueArgs) -> tuple[str, str, str] | None:
    """The first x-argument whose value differs: ``(name, received, current)`` as shown to the
    client, or ``None`` when the two are equivalent."""
    for field, name in _ARGUMENT_NAMES.items():
        now, then = getattr(current, field), getattr(received, field)
        if now != then:
            default = getattr(_DEFAULTS, field)
            return name, _shown(then, default), _shown(now, default)
    return None
