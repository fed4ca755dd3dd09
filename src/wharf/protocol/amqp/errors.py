"""AMQP 0-9-1 reply codes and the protocol errors that carry them.

Every error the AMQP front end raises on purpose knows its reply code and whether it is a
*channel* error (only that channel is closed with Channel.Close) or a *connection* error (the
whole connection is closed with Connection.Close)::

    ProtocolError (wharf.errors)
    └── AMQPError                     reply_code, reply_text, class_id, method_id
        ├── AMQPChannelError          soft: Channel.Close, the connection lives on
        └── AMQPConnectionError       hard: Connection.Close
            └── BadProtocolHeader     not AMQP 0-9-1: answer with our header and hang up
"""

from __future__ import annotations

from enum import IntEnum

from pamqp import base

from wharf.core.queues.exchanges import UnknownExchangeTypeError
from wharf.core.queues.properties import MalformedPropertiesError
from wharf.errors import (
    AccessRefusedError,
    BrokerError,
    NotFoundError,
    ProtocolError,
    ResourceLockedError,
)


class ReplyCode(IntEnum):
    """Reply codes of AMQP 0-9-1 (section 1.2 of the specification)."""

    REPLY_SUCCESS = 200
    CONTENT_TOO_LARGE = 311
    NO_ROUTE = 312
    NO_CONSUMERS = 313
    CONNECTION_FORCED = 320
    INVALID_PATH = 402
    ACCESS_REFUSED = 403
    NOT_FOUND = 404
    RESOURCE_LOCKED = 405
    PRECONDITION_FAILED = 406
    FRAME_ERROR = 501
    SYNTAX_ERROR = 502
    COMMAND_INVALID = 503
    CHANNEL_ERROR = 504
    UNEXPECTED_FRAME = 505
    RESOURCE_ERROR = 506
    NOT_ALLOWED = 530
    NOT_IMPLEMENTED = 540
    INTERNAL_ERROR = 541


#: Codes whose scope is a single channel (soft errors); every other error code closes the
#: connection.
CHANNEL_SCOPED = frozenset(
    {
        ReplyCode.CONTENT_TOO_LARGE,
        ReplyCode.NO_ROUTE,
        ReplyCode.NO_CONSUMERS,
        ReplyCode.ACCESS_REFUSED,
        ReplyCode.NOT_FOUND,
        ReplyCode.RESOURCE_LOCKED,
        ReplyCode.PRECONDITION_FAILED,
    }
)


class AMQPError(ProtocolError):
    """An AMQP error with its reply code; ``class_id``/``method_id`` name the failing method."""

    def __init__(
        self, reply_code: ReplyCode, reply_text: str, *, class_id: int = 0, method_id: int = 0
    ) -> None:
        super().__init__(f"{reply_code.name} - {reply_text}")
        self.reply_code = reply_code
        self.reply_text = reply_text
        self.class_id = class_id
        self.method_id = method_id

    @property
    def closes_connection(self) -> bool:
        return self.reply_code not in CHANNEL_SCOPED


class AMQPChannelError(AMQPError):
    """A soft error: the broker closes the channel, the connection stays open."""


class AMQPConnectionError(AMQPError):
    """A hard error: the broker closes the whole connection."""


class BadProtocolHeader(AMQPConnectionError):
    """The peer did not open with ``AMQP\\x00\\x00\\x09\\x01``.

    The broker answers with the header it does speak and closes the socket (section 4.2.2).
    """

    def __init__(self, received: bytes) -> None:
        super().__init__(ReplyCode.FRAME_ERROR, f"unsupported protocol header {received!r}")
        self.received = received


def error_for(
    reply_code: ReplyCode, reply_text: str, *, class_id: int = 0, method_id: int = 0
) -> AMQPError:
    """Build the channel or connection error that matches ``reply_code``'s scope."""
    cls = AMQPChannelError if reply_code in CHANNEL_SCOPED else AMQPConnectionError
    return cls(reply_code, reply_text, class_id=class_id, method_id=method_id)


def broker_error_reply(exc: BrokerError) -> tuple[ReplyCode, str]:
    """The AMQP reply code for a refusal of the broker core (channel-scoped unless noted)."""
    text = str(exc)
    if isinstance(exc, UnknownExchangeTypeError):
        return ReplyCode.COMMAND_INVALID, text  # RabbitMQ: a connection error
    if isinstance(exc, MalformedPropertiesError):
        return ReplyCode.SYNTAX_ERROR, text
    if isinstance(exc, NotFoundError):
        return ReplyCode.NOT_FOUND, text
    if isinstance(exc, ResourceLockedError):
        return ReplyCode.RESOURCE_LOCKED, text
    if isinstance(exc, AccessRefusedError):
        return ReplyCode.ACCESS_REFUSED, text
    return ReplyCode.PRECONDITION_FAILED, text


def with_method(exc: BrokerError, m: base.Frame) -> AMQPChannelError | AMQPConnectionError:
    """Attach the failing method's ids to a core refusal (the reply code stays the core's)."""
    code, text = broker_error_reply(exc)
    error = error_for(code, text, class_id=m.index >> 16, method_id=m.index & 0xFFFF)
    assert isinstance(error, AMQPChannelError | AMQPConnectionError)
    return error
