"""The consuming half of an AMQP channel: subscriptions, deliveries and their settlement.

How it works
------------
Each Basic.Consume creates a :class:`ChannelConsumer` (the core's
:class:`~wharf.core.queues.consumers.Consumer`) registered with the queue. The queue pushes
:class:`~wharf.core.queues.consumers.Delivery` objects while ``can_take`` allows; the channel
numbers them with its own delivery tags (1, 2, ... per channel, shared with Basic.Get) and
keeps unsettled ones in ``unacked`` (tag -> delivery) until Basic.Ack/Nack/Reject settles them.
Closing the channel requeues what is left, marked redelivered.

A consumer's ``x-priority`` argument (an integer, default 0) is its priority in the queue's
dispatch (:mod:`wharf.core.queues.queue`): higher priorities with credit are served first.

Prefetch (Basic.Qos) follows RabbitMQ's reading of ``global``: ``global=false`` limits each
consumer, ``global=true`` the whole channel. Unlike RabbitMQ, a per-consumer limit also applies
to consumers already running on the channel (Celery raises its prefetch that way).

Deliveries stop while Channel.Flow has turned the channel off and while the connection's
output is above its high-water mark (``owner.writable``); both resume by asking the queues to
dispatch again. In a transaction, settlements wait for Tx.Commit.

A redelivery from a quorum queue carries the ``x-delivery-count`` header: how many times the
message was delivered before (1 on the first redelivery), as RabbitMQ 3.10 adds it.

Consuming the pseudo-queue ``amq.rabbitmq.reply-to`` (direct reply-to) makes the channel's
``reply`` consumer instead of a queue's; see :mod:`wharf.protocol.amqp.direct_reply`.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Container
from typing import TYPE_CHECKING, Any

from pamqp import commands

from wharf.core.queues.args import QueueType
from wharf.core.queues.consumers import Delivery
from wharf.core.queues.direct_reply import REPLY_QUEUE
from wharf.core.queues.message import Message
from wharf.core.queues.properties import MalformedPropertiesError
from wharf.errors import AccessRefusedError
from wharf.protocol.amqp.direct_reply import ChannelReplyConsumer, consume_replies
from wharf.protocol.amqp.errors import AMQPChannelError, AMQPConnectionError, ReplyCode
from wharf.protocol.amqp.state import ChannelState

if TYPE_CHECKING:
    from wharf.core.queues.queue import Queue
    from wharf.protocol.amqp.channel import Channel

__all__ = ["ChannelConsumer", "Consuming"]

_NO_LIMIT = 1 << 30  # a consumer's credit without a prefetch limit


class ChannelConsumer:
    """One Basic.Consume subscription; implements :class:`wharf.core.queues.consumers.Consumer`."""

    __slots__ = ("_consuming", "_exclusive", "_no_ack", "_tag", "queue", "tag_bytes", "unacked")

    def __init__(
        self, consuming: Consuming, queue: Queue, tag: str, *, no_ack: bool, exclusive: bool
    ) -> None:
        self._consuming = consuming
        self._tag = tag
        self._no_ack = no_ack
        self._exclusive = exclusive
        self.queue = queue
        self.tag_bytes = tag.encode("utf-8")
        self.unacked = 0

    @property
    def tag(self) -> str:
        return self._tag

    @property
    def no_ack(self) -> bool:
        return self._no_ack

    @property
    def exclusive(self) -> bool:
        return self._exclusive

    def can_take(self) -> bool:
        consuming = self._consuming
        if not consuming.active or consuming.channel.state is not ChannelState.OPEN:
            return False
        if not consuming.owner.writable:
            return False
        if self._no_ack:
            return True
        limit = consuming.consumer_prefetch
        if limit and self.unacked >= limit:
            return False
        limit = consuming.channel_prefetch
        return not (limit and len(consuming.unacked) >= limit)

    def credit(self) -> int:
        """How many more deliveries :meth:`can_take` would allow now (how much a queue of the
        cluster claims for this consumer)."""
        if not self.can_take():
            return 0
        consuming = self._consuming
        room = _NO_LIMIT
        if self._no_ack:
            return room
        if consuming.consumer_prefetch:
            room = consuming.consumer_prefetch - self.unacked
        if consuming.channel_prefetch:
            room = min(room, consuming.channel_prefetch - len(consuming.unacked))
        return max(room, 0)

    def deliver(self, delivery: Delivery) -> None:
        self._consuming.deliver(self, delivery)

    def cancelled(self, queue: Queue) -> None:
        self._consuming.consumer_cancelled_by_broker(self)


class Consuming:
    """Consumers, delivery tags and unsettled deliveries of one channel."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.owner = channel.owner
        self.active = True  # Channel.Flow
        self.consumer_prefetch = 0
        self.channel_prefetch = 0
        self.consumers: dict[str, ChannelConsumer] = {}
        self.reply: ChannelReplyConsumer | None = None  # consumes amq.rabbitmq.reply-to
        self.unacked: dict[int, tuple[Delivery, ChannelConsumer | None]] = {}
        self._next_tag = 1
        self.tx_settles: list[Callable[[], None]] = []  # settlements waiting for Tx.Commit
        # While this channel's own queue.delete runs, the cancels it causes wait for its
        # delete-ok (RabbitMQ's order, which clients blocked on delete-ok rely on).
        self._held_cancels: list[str] | None = None

    # -- deliveries ----------------------------------------------------------------------------

    def deliver(self, consumer: ChannelConsumer, delivery: Delivery) -> None:
        tag = self._next_tag
        self._next_tag += 1
        if not consumer.no_ack:  # a no-ack delivery is settled by the queue as it hands it out
            consumer.unacked += 1
            self.unacked[tag] = (delivery, consumer)
        message = _redelivered_message(delivery) if delivery.redelivered else delivery.message
        owner = self.owner
        owner.send_raw(
            owner.writer.deliver(
                self.channel.number,
                consumer.tag_bytes,
                tag,
                delivery.redelivered,
                message.exchange.encode("utf-8"),
                message.routing_key.encode("utf-8"),
                message.properties,
                message.body,
            )
        )

    def deliver_reply(self, consumer: ChannelReplyConsumer, message: Message) -> bool:
        """A direct reply to this channel's address: Basic.Deliver now, unless the channel is
        closing (the reply is then unroutable)."""
        if self.reply is not consumer or self.channel.state is not ChannelState.OPEN:
            return False
        tag = self._next_tag
        self._next_tag += 1
        owner = self.owner
        owner.send_raw(
            owner.writer.deliver(
                self.channel.number,
                consumer.tag_bytes,
                tag,
                False,
                message.exchange.encode("utf-8"),
                message.routing_key.encode("utf-8"),
                message.properties,
                message.body,
            )
        )
        return True

    def consumer_cancelled_by_broker(self, consumer: ChannelConsumer) -> None:
        if self.consumers.get(consumer.tag) is not consumer:
            return
        del self.consumers[consumer.tag]
        if not self.channel.owner.client_capabilities.get("consumer_cancel_notify"):
            return
        if self._held_cancels is not None:
            self._held_cancels.append(consumer.tag)
        else:
            self._send_cancel(consumer.tag)

    def _send_cancel(self, tag: str) -> None:
        self.owner.send_method(self.channel.number, commands.Basic.Cancel(consumer_tag=tag))

    def hold_cancels(self) -> None:
        """Keep the broker's consumer cancels until :meth:`release_cancels`."""
        if self._held_cancels is None:
            self._held_cancels = []

    def release_cancels(self) -> None:
        """Send the cancels held since :meth:`hold_cancels`."""
        held, self._held_cancels = self._held_cancels, None
        for tag in held or ():
            self._send_cancel(tag)

    def resume_deliveries(self, skip: Container[Queue] = ()) -> None:
        """Credit came back (or the connection can take output again): let every queue we
        consume from push more."""
        for queue in {c.queue for c in self.consumers.values()}:
            if queue not in skip:
                queue.dispatch()

    # -- basic class methods -------------------------------------------------------------------

    def qos(self, m: commands.Basic.Qos) -> None:
        if m.prefetch_size:
            raise AMQPConnectionError(
                ReplyCode.NOT_IMPLEMENTED, "prefetch_size is not supported", class_id=60,
                method_id=10,
            )
        if m.global_:
            self.channel_prefetch = m.prefetch_count
        else:
            self.consumer_prefetch = m.prefetch_count
        self.channel.send(commands.Basic.QosOk())
        self.resume_deliveries()

    def consume(self, m: commands.Basic.Consume) -> None:
        channel = self.channel
        if m.queue == REPLY_QUEUE:
            self._consume_replies(m)
            return
        queue = channel.queue(m.queue)
        tag = self._new_tag(m)
        if any(c.exclusive for c in queue.consumers) or (m.exclusive and queue.consumers):
            raise AccessRefusedError(
                f"queue '{queue.name}' in vhost '{channel.owner.vhost_name}' in exclusive use"
            )
        priority = _consumer_priority(m.arguments)
        consumer = ChannelConsumer(self, queue, tag, no_ack=m.no_ack, exclusive=m.exclusive)
        self.consumers[tag] = consumer  # a close from here on cancels it
        if queue.awaits_first:  # registered in the cluster, or logs opened, first
            self.owner.await_core(
                self._admit(queue, consumer), lambda _: self._subscribe(m, consumer, priority)
            )
            return
        self._subscribe(m, consumer, priority)

    async def _admit(self, queue: Queue, consumer: ChannelConsumer) -> None:
        try:
            await queue.admit(consumer)
        except BaseException:
            if self.consumers.get(consumer.tag) is consumer:
                del self.consumers[consumer.tag]
            raise

    def _subscribe(
        self, m: commands.Basic.Consume, consumer: ChannelConsumer, priority: int
    ) -> None:
        # Consume-Ok goes out before the first delivery, which add_consumer may trigger.
        if not m.nowait:
            self.channel.send(commands.Basic.ConsumeOk(consumer_tag=consumer.tag))
        consumer.queue.add_consumer(consumer, priority=priority)

    def _new_tag(self, m: commands.Basic.Consume) -> str:
        """Basic.Consume's tag, or a new one; reusing a tag of this channel is 530."""
        tag = m.consumer_tag or f"amq.ctag-{secrets.token_urlsafe(16)}"
        if tag in self.consumers or (self.reply is not None and self.reply.tag == tag):
            raise AMQPConnectionError(
                ReplyCode.NOT_ALLOWED,
                f"attempt to reuse consumer tag '{tag}'",
                class_id=60,
                method_id=20,
            )
        return tag

    def _consume_replies(self, m: commands.Basic.Consume) -> None:
        self.reply = consume_replies(self, m, self._new_tag(m))
        if not m.nowait:
            self.channel.send(commands.Basic.ConsumeOk(consumer_tag=self.reply.tag))

    def _stop_replies(self) -> None:
        reply, self.reply = self.reply, None
        if reply is not None:
            reply.stop()

    def cancel(self, m: commands.Basic.Cancel) -> None:
        if self.reply is not None and self.reply.tag == m.consumer_tag:
            self._stop_replies()
        consumer = self.consumers.pop(m.consumer_tag or "", None)
        if consumer is not None:
            # Its unsettled deliveries stay with the channel until acked or the channel closes.
            consumer.queue.remove_consumer(consumer, requeue_unacked=False)
        if not m.nowait:
            self.channel.send(commands.Basic.CancelOk(consumer_tag=m.consumer_tag))

    def get(self, m: commands.Basic.Get) -> None:
        queue = self.channel.queue(m.queue)
        if queue.awaits_first:  # claimed in the cluster, or logs opened, first
            self.owner.await_core(queue.fetch(m.no_ack), lambda d: self._got(d, m.no_ack))
            return
        self._got(queue.basic_get(m.no_ack), m.no_ack)

    def _got(self, delivery: Delivery | None, no_ack: bool) -> None:
        channel = self.channel
        if delivery is None:
            channel.send(commands.Basic.GetEmpty())
            return
        tag = self._next_tag
        self._next_tag += 1
        if not no_ack:
            self.unacked[tag] = (delivery, None)
        message = _redelivered_message(delivery) if delivery.redelivered else delivery.message
        owner = channel.owner
        owner.send_raw(
            owner.writer.get_ok(
                channel.number,
                tag,
                delivery.redelivered,
                message.exchange.encode("utf-8"),
                message.routing_key.encode("utf-8"),
                delivery.message_count,
                message.properties,
                message.body,
            )
        )

    def ack(self, m: commands.Basic.Ack) -> None:
        tags = self._select_tags(m.delivery_tag or 0, bool(m.multiple))
        self._tx_or_now(lambda: self._settle(tags, _ack))

    def nack(self, m: commands.Basic.Nack) -> None:
        tags = self._select_tags(m.delivery_tag or 0, bool(m.multiple))
        requeue = bool(m.requeue)
        self._tx_or_now(lambda: self._settle(tags, _rejecter(requeue)))

    def reject(self, m: commands.Basic.Reject) -> None:
        tags = self._select_tags(m.delivery_tag or 0, False)
        requeue = bool(m.requeue)
        self._tx_or_now(lambda: self._settle(tags, _rejecter(requeue)))

    def recover(self, m: commands.Basic.Recover) -> None:
        self._recover()
        self.channel.send(commands.Basic.RecoverOk())

    def recover_async(self, m: commands.Basic.RecoverAsync) -> None:
        self._recover()

    def flow(self, m: commands.Channel.Flow) -> None:
        self.active = bool(m.active)
        self.channel.send(commands.Channel.FlowOk(active=m.active))
        if m.active:
            self.resume_deliveries()

    # -- settlement ----------------------------------------------------------------------------

    def _recover(self) -> None:
        """Requeue every unsettled delivery (RabbitMQ treats requeue=false the same way)."""
        self._settle(list(self.unacked), _rejecter(True))

    def _tx_or_now(self, settle: Callable[[], None]) -> None:
        if self.channel.tx_mode:
            self.tx_settles.append(settle)
        else:
            settle()

    def commit(self) -> None:
        """Tx.Commit: carry out the settlements kept since the last commit."""
        settles, self.tx_settles = self.tx_settles, []
        for settle in settles:
            settle()

    def _settle(self, tags: list[int], action: Callable[[Queue, list[int]], None]) -> None:
        by_queue: dict[Queue, list[int]] = {}
        for tag in tags:
            delivery, consumer = self.unacked.pop(tag)
            if consumer is not None:
                consumer.unacked -= 1
            by_queue.setdefault(delivery.queue, []).append(delivery.delivery_id)
        for queue, ids in by_queue.items():
            action(queue, ids)  # the queue dispatches again by itself
        self.resume_deliveries(skip=by_queue)

    def _select_tags(self, delivery_tag: int, multiple: bool) -> list[int]:
        if multiple:
            if delivery_tag == 0:
                return list(self.unacked)
            tags = [t for t in self.unacked if t <= delivery_tag]
            if not tags and delivery_tag not in self.unacked and delivery_tag >= self._next_tag:
                raise _unknown_tag(delivery_tag)
            return tags
        if delivery_tag not in self.unacked:
            raise _unknown_tag(delivery_tag)
        return [delivery_tag]

    def release(self) -> None:
        """Cancel consumers and requeue unsettled deliveries (channel or connection closing)."""
        self._stop_replies()
        consumers, self.consumers = self.consumers, {}
        for consumer in consumers.values():
            consumer.queue.remove_consumer(consumer, requeue_unacked=False)
        unacked, self.unacked = self.unacked, {}
        by_queue: dict[Queue, list[int]] = {}
        for delivery, _ in unacked.values():
            by_queue.setdefault(delivery.queue, []).append(delivery.delivery_id)
        for queue, ids in by_queue.items():
            if not queue.deleted:
                queue.reject(ids, requeue=True)
        self.tx_settles.clear()


def _redelivered_message(delivery: Delivery) -> Message:
    """A redelivered message as sent to the client: from a quorum queue it gets
    ``x-delivery-count`` (earlier deliveries), unless its headers table cannot be edited."""
    message = delivery.message
    if delivery.queue.args.queue_type is QueueType.QUORUM:
        try:
            return message.with_headers({"x-delivery-count": delivery.delivery_count - 1})
        except MalformedPropertiesError:
            return message
    return message


def _ack(queue: Queue, ids: list[int]) -> None:
    queue.ack(ids)


def _rejecter(requeue: bool) -> Callable[[Queue, list[int]], None]:
    def reject(queue: Queue, ids: list[int]) -> None:
        queue.reject(ids, requeue=requeue)

    return reject


def _consumer_priority(arguments: dict[str, Any] | None) -> int:
    """Basic.Consume's ``x-priority`` (default 0); anything but an integer is 406."""
    value = (arguments or {}).get("x-priority", 0)
    if type(value) is not int:
        raise AMQPChannelError(
            ReplyCode.PRECONDITION_FAILED,
            f"invalid arg 'x-priority': {value!r} is not an integer",
            class_id=60,
            method_id=20,
        )
    return value


def _unknown_tag(tag: int) -> AMQPChannelError:
    return AMQPChannelError(
        ReplyCode.PRECONDITION_FAILED, f"unknown delivery tag {tag}", class_id=60, method_id=80
    )
