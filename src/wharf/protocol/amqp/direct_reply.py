"""Direct reply-to on an AMQP channel: consuming ``amq.rabbitmq.reply-to`` and naming it.

How it works
------------
The routing is the core's (:mod:`wharf.core.queues.direct_reply`); this module holds the
channel's side of it, with RabbitMQ's rules and error texts:

* Basic.Consume of ``amq.rabbitmq.reply-to`` (:func:`consume_replies`) must be no-ack (406
  otherwise) and happens at most once per channel (406 again); it registers a
  :class:`ChannelReplyConsumer`, whose address the virtual host chose. Basic.Cancel of its tag
  or the channel's end unregisters it.
* A Basic.Publish whose ``reply-to`` is ``amq.rabbitmq.reply-to`` (:func:`name_reply_address`)
  has it replaced by the channel's address; without a reply consumer on the channel the publish
  is refused with 406, which closes the channel.
* Queue.Declare of the pseudo-queue, or of a live address, answers declare-ok with 0 messages
  and 1 consumer whatever its other fields, as RabbitMQ does (:func:`declared_reply_queue`);
  another name under ``amq.rabbitmq.reply-to`` is 404.
* Replies go out as Basic.Deliver (redelivered false, the channel's next delivery tag), at
  once: no-ack deliveries take no prefetch credit.

In cluster mode the same holds: an address names its node, and a reply published on another
node is forwarded there through the database (:mod:`wharf.cluster.queues.replies`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pamqp import commands

from wharf.core.queues.direct_reply import (
    REPLY_QUEUE,
    DirectReplies,
    with_reply_address,
)
from wharf.core.queues.message import Message
from wharf.errors import NotFoundError
from wharf.protocol.amqp.errors import AMQPChannelError, ReplyCode

if TYPE_CHECKING:
    from wharf.protocol.amqp.channel import Channel
    from wharf.protocol.amqp.consuming import Consuming

__all__ = [
    "ChannelReplyConsumer",
    "consume_replies",
    "declared_reply_queue",
    "is_reply_queue",
    "name_reply_address",
]

_CONSUME = (60, 20)
_PUBLISH = (60, 40)


def is_reply_queue(name: str) -> bool:
    """Whether ``name`` is the pseudo-queue or under it (queue.declare's special case)."""
    return name.startswith(REPLY_QUEUE)


class ChannelReplyConsumer:
    """A channel's subscription to its reply address; implements
    :class:`wharf.core.queues.direct_reply.ReplyConsumer`."""

    __slots__ = ("_consuming", "_replies", "address", "tag", "tag_bytes")

    def __init__(self, consuming: Consuming, tag: str, replies: DirectReplies) -> None:
        self._consuming = consuming
        self._replies = replies
        self.tag = tag
        self.tag_bytes = tag.encode("utf-8")
        self.address = replies.register(self)

    def deliver_reply(self, message: Message) -> bool:
        return self._consuming.deliver_reply(self, message)

    def stop(self) -> None:
        """Unregister: replies to the address route nowhere from now on."""
        self._replies.unregister(self.address)


def consume_replies(
    consuming: Consuming, m: commands.Basic.Consume, tag: str
) -> ChannelReplyConsumer:
    """Basic.Consume of the pseudo-queue: the registered consumer (Consume-Ok is the
    caller's)."""
    channel = consuming.channel
    if not m.no_ack:
        raise _refused(_CONSUME, "reply consumer cannot acknowledge")
    if consuming.reply is not None:
        raise _refused(_CONSUME, "reply consumer already set")
    return ChannelReplyConsumer(consuming, tag, channel.vhost.router.replies)


def name_reply_address(channel: Channel, message: Message) -> Message:
    """``message``, whose ``reply-to`` is ``amq.rabbitmq.reply-to`` (see
    :func:`~wharf.core.queues.direct_reply.asks_direct_reply`), with the channel's address
    instead (406 if the channel does not consume its replies)."""
    reply = channel.consuming.reply
    if reply is None:
        raise _refused(_PUBLISH, "fast reply consumer does not exist")
    return with_reply_address(message, reply.address)


def declared_reply_queue(channel: Channel, name: str) -> commands.Queue.DeclareOk:
    """Queue.Declare of ``name`` under ``amq.rabbitmq.reply-to``: declare-ok if it is the
    pseudo-queue or a live address, else 404."""
    vhost = channel.vhost
    if not vhost.router.replies.exists(name):
        raise NotFoundError(f"no queue '{name}' in vhost '{vhost.name}'")
    return commands.Queue.DeclareOk(queue=name, message_count=0, consumer_count=1)


def _refused(method: tuple[int, int], text: str) -> AMQPChannelError:
    return AMQPChannelError(
        ReplyCode.PRECONDITION_FAILED, text, class_id=method[0], method_id=method[1]
    )
