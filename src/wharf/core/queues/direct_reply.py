"""Direct reply-to: RabbitMQ's ``amq.rabbitmq.reply-to`` pseudo-queue, routed without a queue.

How it works: a front end's channel that consumes the pseudo-queue ``amq.rabbitmq.reply-to``
(in no-ack mode) registers a :class:`ReplyConsumer` with its virtual host's
:class:`DirectReplies` and gets an *address*, ``amq.rabbitmq.reply-to.<token>``, whose token
is random (so not guessable from other addresses) and unique among the live ones. A message
that channel publishes with ``reply-to`` set to the pseudo-queue's name has that property
rewritten to its address (:func:`with_reply_address`). A publish to the default exchange whose
routing key is a live address is handed by the router straight to its consumer
(:meth:`DirectReplies.deliver`): no queue holds it and nothing is stored. Once the consumer is
gone (cancelled, its channel closed) the address routes nowhere and is never handed out again,
so a mandatory reply comes back with basic.return 312 NO_ROUTE.

In cluster mode a node's addresses carry its broker id (``amq.rabbitmq.reply-to.n<id>.<token>``,
:attr:`DirectReplies.node_prefix`, :func:`reply_broker`), so that a node where a reply to
another node's address is published can forward it there
(:mod:`wharf.cluster.queues.replies`).
"""

from __future__ import annotations

import secrets
from typing import Protocol

from wharf.core.queues import properties as props
from wharf.core.queues.message import Message

__all__ = [
    "REPLY_PREFIX",
    "REPLY_QUEUE",
    "DirectReplies",
    "ReplyConsumer",
    "asks_direct_reply",
    "reply_broker",
    "with_reply_address",
]

#: The pseudo-queue a requester consumes and names in ``reply-to``.
REPLY_QUEUE = "amq.rabbitmq.reply-to"
#: What every reply address starts with.
REPLY_PREFIX = REPLY_QUEUE + "."

_REPLY_QUEUE_BYTES = REPLY_QUEUE.encode("ascii")
_REPLY_TO_FIELD = bytes([len(_REPLY_QUEUE_BYTES)]) + _REPLY_QUEUE_BYTES
_TOKEN_BYTES = 18  # 144 random bits, 24 characters of URL-safe base64


class ReplyConsumer(Protocol):
    """The subscriber to one reply address (a front end's channel)."""

    def deliver_reply(self, message: Message) -> bool:
        """Send ``message`` on now; False if it cannot be taken (the channel is closing).
        Called on the event loop, must not block."""
        ...


class DirectReplies:
    """The live reply addresses of one virtual host and their consumers."""

    def __init__(self) -> None:
        self._consumers: dict[str, ReplyConsumer] = {}
        self.node_prefix = ""
        """Put before every token (a cluster node's ``n<broker id>.``)."""

    def __len__(self) -> int:
        return len(self._consumers)

    def register(self, consumer: ReplyConsumer) -> str:
        """A new address for ``consumer``: ``amq.rabbitmq.reply-to.<node prefix><random
        token>``."""
        while True:
            address = REPLY_PREFIX + self.node_prefix + secrets.token_urlsafe(_TOKEN_BYTES)
            if address not in self._consumers:
                self._consumers[address] = consumer
                return address

    def unregister(self, address: str) -> None:
        """Forget ``address``: replies to it route nowhere from now on."""
        self._consumers.pop(address, None)

    def exists(self, name: str) -> bool:
        """Whether queue.declare of ``name`` finds it: the pseudo-queue itself, or a live
        address."""
        return name == REPLY_QUEUE or name in self._consumers

    def deliver(self, address: str, message: Message) -> bool:
        """Hand ``message`` to the consumer of ``address``; False if there is none (or it
        could not take the message): the message is unroutable."""
        consumer = self._consumers.get(address)
        return consumer is not None and consumer.deliver_reply(message)


def reply_broker(address: str) -> int | None:
    """The broker id a cluster node's reply address names (None for any other name)."""
    if not address.startswith(REPLY_PREFIX + "n"):
        return None
    number, dot, _ = address[len(REPLY_PREFIX) + 1 :].partition(".")
    return int(number) if dot and number.isdigit() else None


def asks_direct_reply(properties: bytes) -> bool:
    """Whether the property bytes set ``reply-to`` to exactly ``amq.rabbitmq.reply-to``
    (cheap when they do not: most messages have no reply-to at all)."""
    if not properties[0] & (props.FLAG_REPLY_TO >> 8) or _REPLY_TO_FIELD not in properties:
        return False
    span = props.field_span(properties, props.FLAG_REPLY_TO)
    return span is not None and properties[span[0] : span[1]] == _REPLY_TO_FIELD


def with_reply_address(message: Message, address: str) -> Message:
    """``message`` with its ``reply-to`` replaced by ``address`` (every other property byte
    unchanged)."""
    data = message.properties
    span = props.field_span(data, props.FLAG_REPLY_TO)
    assert span is not None
    raw = address.encode("ascii")
    rewritten = data[: span[0]] + bytes([len(raw)]) + raw + data[span[1] :]
    return Message(message.exchange, message.routing_key, rewritten, message.body)
