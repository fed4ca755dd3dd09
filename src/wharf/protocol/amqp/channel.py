"""One AMQP channel: the exchange, queue, basic, confirm and tx classes on top of the core.

How it works
------------
:meth:`Channel.handle` receives the method frames of its channel number (the connection has
already dealt with Channel.Open/Close) and dispatches them through ``_methods`` to one coroutine
each. :meth:`Channel.content` receives Basic.Publish and the content header and body frames
that follow it, synchronously (the hot path), under the content table of
:mod:`wharf.protocol.amqp.state`; the completed message is routed by the virtual host.

Consuming: each Basic.Consume creates a :class:`ChannelConsumer` (the core's
:class:`~wharf.core.queues.consumers.Consumer`) registered with the queue. The queue pushes
:class:`~wharf.core.queues.consumers.Delivery` objects while ``can_take`` allows; the channel
numbers them with its own delivery tags (1, 2, ... per channel) and keeps unsettled ones in
``unacked`` (tag -> delivery) until Basic.Ack/Nack/Reject settles them. Closing the channel
requeues what is left, marked redelivered.

A consumer's ``x-priority`` argument (an integer, default 0) is its priority in the queue's
dispatch (:mod:`wharf.core.queues.queue`): higher priorities with credit are served first.

Prefetch (Basic.Qos) follows RabbitMQ's reading of ``global``: ``global=false`` limits each
consumer, ``global=true`` the whole channel. Unlike RabbitMQ, a per-consumer limit also applies
to consumers already running on the channel (Celery raises its prefetch that way).

Publisher confirms (confirm.select) are kept by
:class:`~wharf.protocol.amqp.confirms.PublisherConfirms`.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Container
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from pamqp import base, commands

from wharf.core.queues.consumers import Delivery
from wharf.core.queues.message import Message
from wharf.core.queues.vhost import PublishResult
from wharf.errors import AccessRefusedError, BrokerError, NotFoundError, StorageError
from wharf.protocol.amqp.confirms import PublisherConfirms
from wharf.protocol.amqp.errors import (
    AMQPChannelError,
    AMQPConnectionError,
    ReplyCode,
    broker_error_reply,
    error_for,
)
from wharf.protocol.amqp.frames import (
    BASIC_CLASS,
    ContentBodyFrame,
    ContentHeaderFrame,
    FrameWriter,
    MethodFrame,
    PublishFrame,
)
from wharf.protocol.amqp.state import (
    ChannelState,
    ContentInput,
    ContentState,
    content_transition,
)
from wharf.protocol.amqp.timing import RequestObserver

if TYPE_CHECKING:
    from wharf.core.broker import Broker
    from wharf.core.queues.queue import Queue
    from wharf.core.queues.vhost import VirtualHost

__all__ = ["MAX_BODY_SIZE", "Channel", "ChannelConsumer", "ChannelOwner"]

#: Largest message body accepted (RabbitMQ's default max_message_size is 128 MiB).
MAX_BODY_SIZE = 128 << 20


class ChannelOwner(Protocol):
    """What a channel needs from its connection."""

    broker: Broker
    writer: FrameWriter
    vhost_name: str
    username: str
    writable: bool  # False while the socket's write buffer is above its high-water mark
    request_stats: RequestObserver | None  # times confirmed publishes, if set

    @property
    def client_capabilities(self) -> dict[str, Any]: ...

    def send_method(self, channel: int, method: base.Frame) -> None: ...

    def send_raw(self, data: bytes) -> None: ...


class ChannelConsumer:
    """One Basic.Consume subscription; implements :class:`wharf.core.queues.consumers.Consumer`."""

    __slots__ = ("_channel", "_exclusive", "_no_ack", "_tag", "queue", "tag_bytes", "unacked")

    def __init__(
        self, channel: Channel, queue: Queue, tag: str, *, no_ack: bool, exclusive: bool
    ) -> None:
        self._channel = channel
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
        channel = self._channel
        if not channel.active or channel.state is not ChannelState.OPEN:
            return False
        if not channel.owner.writable:
            return False
        if self._no_ack:
            return True
        limit = channel.consumer_prefetch
        if limit and self.unacked >= limit:
            return False
        limit = channel.channel_prefetch
        return not (limit and len(channel.unacked) >= limit)

    def deliver(self, delivery: Delivery) -> None:
        self._channel.deliver(self, delivery)

    def cancelled(self, queue: Queue) -> None:
        self._channel.consumer_cancelled_by_broker(self)


class Channel:
    """See the module docstring."""

    def __init__(self, owner: ChannelOwner, number: int) -> None:
        self.owner = owner
        self.number = number
        self.state = ChannelState.OPEN
        self.active = True  # Channel.Flow
        self.consumer_prefetch = 0
        self.channel_prefetch = 0
        self.consumers: dict[str, ChannelConsumer] = {}
        self.unacked: dict[int, tuple[Delivery, ChannelConsumer | None]] = {}
        self._next_tag = 1
        # publishing
        self._content = ContentState.IDLE
        self._publish: PublishFrame | None = None
        self._properties = b""
        self._body_size = 0
        self._body: list[bytes] = []
        self._received = 0
        self.confirms: PublisherConfirms | None = None  # set by confirm.select
        # transactions
        self.tx_mode = False
        self._tx_publishes: list[tuple[Message, bool]] = []
        self._tx_settles: list[Callable[[], None]] = []
        self._methods: dict[type[base.Frame], Callable[[Any], Awaitable[None]]] = {
            commands.Exchange.Declare: self._exchange_declare,
            commands.Exchange.Delete: self._exchange_delete,
            commands.Exchange.Bind: self._exchange_bind,
            commands.Exchange.Unbind: self._exchange_unbind,
            commands.Queue.Declare: self._queue_declare,
            commands.Queue.Bind: self._queue_bind,
            commands.Queue.Unbind: self._queue_unbind,
            commands.Queue.Purge: self._queue_purge,
            commands.Queue.Delete: self._queue_delete,
            commands.Basic.Qos: self._basic_qos,
            commands.Basic.Consume: self._basic_consume,
            commands.Basic.Cancel: self._basic_cancel,
            commands.Basic.Get: self._basic_get,
            commands.Basic.Ack: self._basic_ack,
            commands.Basic.Nack: self._basic_nack,
            commands.Basic.Reject: self._basic_reject,
            commands.Basic.Recover: self._basic_recover,
            commands.Basic.RecoverAsync: self._basic_recover_async,
            commands.Channel.Flow: self._channel_flow,
            commands.Confirm.Select: self._confirm_select,
            commands.Tx.Select: self._tx_select,
            commands.Tx.Commit: self._tx_commit,
            commands.Tx.Rollback: self._tx_rollback,
        }

    @property
    def vhost(self) -> VirtualHost:
        name = self.owner.vhost_name
        try:
            return self.owner.broker.vhosts[name]
        except NotFoundError:
            raise AMQPConnectionError(
                ReplyCode.CONNECTION_FORCED, f"vhost '{name}' was deleted"
            ) from None

    # -- frames --------------------------------------------------------------------------------

    def content(self, event: PublishFrame | ContentHeaderFrame | ContentBodyFrame) -> None:
        """A frame of a published message (synchronous: the hot path never awaits)."""
        if type(event) is ContentBodyFrame:
            self._on_content_body(event)
        elif type(event) is PublishFrame:
            self._content = content_transition(self._content, ContentInput.PUBLISH)
            if event.immediate:  # removed from RabbitMQ 3.0 on; clients do not send it
                raise AMQPConnectionError(
                    ReplyCode.NOT_IMPLEMENTED, "immediate=true", class_id=60, method_id=40
                )
            self._publish = event
        else:
            assert type(event) is ContentHeaderFrame
            self._on_content_header(event)

    def whole_content(self, properties: bytes, body: bytes) -> None:
        """The content header and every body frame of the message just announced by
        Basic.Publish, read in one step (AWAIT_HEADER --HEADER--> AWAIT_BODY --LAST_BODY-->
        IDLE, or --LAST_BODY--> IDLE for an empty body)."""
        assert self._content is ContentState.AWAIT_HEADER
        self._content = ContentState.IDLE
        self._properties = properties
        self._complete_publish(body)

    async def handle(self, event: MethodFrame) -> None:
        """A method frame of this channel."""
        self._content = content_transition(self._content, ContentInput.METHOD)
        method = event.method
        handler = self._methods.get(type(method))
        if handler is None:
            raise AMQPConnectionError(
                ReplyCode.COMMAND_INVALID,
                f"{method.name} is not valid on a channel",
                class_id=method.index >> 16,
                method_id=method.index & 0xFFFF,
            )
        try:
            await handler(method)
        except BrokerError as exc:
            raise _with_method(exc, method) from exc

    def _on_content_header(self, frame: ContentHeaderFrame) -> None:
        if frame.class_id != BASIC_CLASS:
            raise AMQPConnectionError(
                ReplyCode.UNEXPECTED_FRAME, f"content header for class {frame.class_id}"
            )
        if frame.body_size == 0:
            self._content = content_transition(self._content, ContentInput.LAST_BODY)
            self._properties = frame.properties
            self._complete_publish(b"")
            return
        self._content = content_transition(self._content, ContentInput.HEADER)
        if frame.body_size > MAX_BODY_SIZE:
            # Keep reading the body frames (they are bounded by frame_max) but refuse it.
            raise AMQPChannelError(
                ReplyCode.PRECONDITION_FAILED,
                f"message size {frame.body_size} is larger than max size {MAX_BODY_SIZE}",
                class_id=60,
                method_id=40,
            )
        self._properties = frame.properties
        self._body_size = frame.body_size
        self._body = []
        self._received = 0

    def _on_content_body(self, frame: ContentBodyFrame) -> None:
        if self._content is not ContentState.AWAIT_BODY:
            content_transition(self._content, ContentInput.BODY)  # raises UNEXPECTED_FRAME
        self._received += len(frame.payload)
        if self._received > self._body_size:
            raise AMQPConnectionError(
                ReplyCode.FRAME_ERROR,
                f"body frames carry {self._received} bytes, header announced {self._body_size}",
            )
        self._body.append(frame.payload)
        if self._received < self._body_size:
            return  # AWAIT_BODY --BODY--> AWAIT_BODY
        self._content = content_transition(self._content, ContentInput.LAST_BODY)
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        self._body = []
        self._complete_publish(body)

    # -- publishing ----------------------------------------------------------------------------

    def _complete_publish(self, body: bytes) -> None:
        publish = self._publish
        assert publish is not None
        self._publish = None
        try:
            message = Message(publish.exchange, publish.routing_key, self._properties, body)
            if self.tx_mode:
                self.vhost.get_exchange(publish.exchange)  # 404 now, not at commit
                self._tx_publishes.append((message, publish.mandatory))
                return
            result = self.vhost.publish_nowait(message)
        except BrokerError as exc:
            raise _with_method(exc, commands.Basic.Publish()) from exc
        except StorageError:
            # A queue's log could not take it (disk full, with a full batch already waiting):
            # in confirm mode that is a nack, as for a write that fails later; without
            # confirms the connection is closed with the error.
            if self.confirms is None:
                raise
            self.confirms.published(PublishResult(routed=True, rejected=True))
            return
        if publish.mandatory and not result.routed:
            self._return_unroutable(message)
        if self.confirms is not None:
            self.confirms.published(result)

    def _return_unroutable(self, message: Message) -> None:
        self.owner.send_raw(
            self.owner.writer.basic_return(
                self.number,
                int(ReplyCode.NO_ROUTE),
                "NO_ROUTE",
                message.exchange,
                message.routing_key,
                message.properties,
                message.body,
            )
        )

    # -- deliveries ----------------------------------------------------------------------------

    def deliver(self, consumer: ChannelConsumer, delivery: Delivery) -> None:
        tag = self._next_tag
        self._next_tag += 1
        if not consumer.no_ack:  # a no-ack delivery is settled by the queue as it hands it out
            consumer.unacked += 1
            self.unacked[tag] = (delivery, consumer)
        message = delivery.message
        self.owner.send_raw(
            self.owner.writer.deliver(
                self.number,
                consumer.tag_bytes,
                tag,
                delivery.redelivered,
                message.exchange.encode("utf-8"),
                message.routing_key.encode("utf-8"),
                message.properties,
                message.body,
            )
        )

    def consumer_cancelled_by_broker(self, consumer: ChannelConsumer) -> None:
        if self.consumers.get(consumer.tag) is not consumer:
            return
        del self.consumers[consumer.tag]
        if self.owner.client_capabilities.get("consumer_cancel_notify"):
            self.owner.send_method(self.number, commands.Basic.Cancel(consumer_tag=consumer.tag))

    def _settle(self, tags: list[int], action: Callable[[Queue, list[int]], None]) -> None:
        by_queue: dict[Queue, list[int]] = {}
        for tag in tags:
            delivery, consumer = self.unacked.pop(tag)
            if consumer is not None:
                consumer.unacked -= 1
            by_queue.setdefault(delivery.queue, []).append(delivery.delivery_id)
        for queue, ids in by_queue.items():
            action(queue, ids)  # the queue dispatches again by itself
        self._dispatch_consumed(skip=by_queue)

    def resume_deliveries(self) -> None:
        """The connection can take more output again."""
        self._dispatch_consumed()

    def _dispatch_consumed(self, skip: Container[Queue] = ()) -> None:
        """Credit came back: let every queue we consume from push more."""
        for queue in {c.queue for c in self.consumers.values()}:
            if queue not in skip:
                queue.dispatch()

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

    # -- lifecycle -----------------------------------------------------------------------------

    def release_now(self) -> None:
        """Cancel consumers and requeue unsettled deliveries (channel or connection closing)."""
        self.state = ChannelState.CLOSED if self.state is ChannelState.OPEN else self.state
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
        self._tx_publishes.clear()
        self._tx_settles.clear()
        if self.confirms is not None:
            self.confirms.close()

    # -- exchange class ------------------------------------------------------------------------

    async def _exchange_declare(self, m: commands.Exchange.Declare) -> None:
        await self.vhost.declare_exchange(
            m.exchange,
            m.exchange_type,
            durable=bool(m.durable),
            auto_delete=bool(m.auto_delete),
            internal=bool(m.internal),
            arguments=dict(m.arguments or {}),
            passive=bool(m.passive),
        )
        if not m.nowait:
            self.owner.send_method(self.number, commands.Exchange.DeclareOk())

    async def _exchange_delete(self, m: commands.Exchange.Delete) -> None:
        vhost = self.vhost
        if m.exchange in vhost.exchanges:  # deleting an absent exchange succeeds (RabbitMQ)
            await vhost.delete_exchange(m.exchange, if_unused=bool(m.if_unused))
        if not m.nowait:
            self.owner.send_method(self.number, commands.Exchange.DeleteOk())

    async def _exchange_bind(self, m: commands.Exchange.Bind) -> None:
        await self.vhost.bind_exchange(
            m.destination, m.source, m.routing_key, dict(m.arguments or {})
        )
        if not m.nowait:
            self.owner.send_method(self.number, commands.Exchange.BindOk())

    async def _exchange_unbind(self, m: commands.Exchange.Unbind) -> None:
        await self.vhost.unbind_exchange(
            m.destination, m.source, m.routing_key, dict(m.arguments or {})
        )
        if not m.nowait:
            self.owner.send_method(self.number, commands.Exchange.UnbindOk())

    # -- queue class ---------------------------------------------------------------------------

    async def _queue_declare(self, m: commands.Queue.Declare) -> None:
        queue = await self.vhost.declare_queue(
            m.queue,
            durable=bool(m.durable),
            exclusive=bool(m.exclusive),
            auto_delete=bool(m.auto_delete),
            arguments=dict(m.arguments or {}),
            passive=bool(m.passive),
            owner=self.owner,
        )
        if not m.nowait:
            self.owner.send_method(
                self.number,
                commands.Queue.DeclareOk(
                    queue=queue.name,
                    message_count=queue.message_count,
                    consumer_count=queue.consumer_count,
                ),
            )

    def _queue(self, name: str) -> Queue:
        """The named queue; 404 if absent, 405 if another connection's exclusive queue."""
        return self.vhost.get_queue(name, self.owner)

    async def _queue_bind(self, m: commands.Queue.Bind) -> None:
        await self.vhost.bind_queue(
            m.queue, m.exchange, m.routing_key, dict(m.arguments or {}), owner=self.owner
        )
        if not m.nowait:
            self.owner.send_method(self.number, commands.Queue.BindOk())

    async def _queue_unbind(self, m: commands.Queue.Unbind) -> None:
        await self.vhost.unbind_queue(
            m.queue, m.exchange, m.routing_key, dict(m.arguments or {}), owner=self.owner
        )
        self.owner.send_method(self.number, commands.Queue.UnbindOk())

    async def _queue_purge(self, m: commands.Queue.Purge) -> None:
        count = await self.vhost.purge_queue(m.queue, owner=self.owner)
        if not m.nowait:
            self.owner.send_method(self.number, commands.Queue.PurgeOk(message_count=count))

    async def _queue_delete(self, m: commands.Queue.Delete) -> None:
        vhost = self.vhost
        count = 0
        if m.queue in vhost.queues:  # deleting an absent queue succeeds (RabbitMQ)
            count = await vhost.delete_queue(
                m.queue,
                if_unused=bool(m.if_unused),
                if_empty=bool(m.if_empty),
                owner=self.owner,
            )
        if not m.nowait:
            self.owner.send_method(self.number, commands.Queue.DeleteOk(message_count=count))

    # -- basic class ---------------------------------------------------------------------------

    async def _basic_qos(self, m: commands.Basic.Qos) -> None:
        if m.prefetch_size:
            raise AMQPConnectionError(
                ReplyCode.NOT_IMPLEMENTED, "prefetch_size is not supported", class_id=60,
                method_id=10,
            )
        if m.global_:
            self.channel_prefetch = m.prefetch_count
        else:
            self.consumer_prefetch = m.prefetch_count
        self.owner.send_method(self.number, commands.Basic.QosOk())
        self._dispatch_consumed()

    async def _basic_consume(self, m: commands.Basic.Consume) -> None:
        queue = self._queue(m.queue)
        tag = m.consumer_tag or f"amq.ctag-{_random_suffix()}"
        if tag in self.consumers:
            raise AMQPConnectionError(
                ReplyCode.NOT_ALLOWED,
                f"attempt to reuse consumer tag '{tag}'",
                class_id=60,
                method_id=20,
            )
        if any(c.exclusive for c in queue.consumers) or (m.exclusive and queue.consumers):
            raise AccessRefusedError(
                f"queue '{queue.name}' in vhost '{self.owner.vhost_name}' in exclusive use"
            )
        priority = _consumer_priority(m.arguments)
        consumer = ChannelConsumer(self, queue, tag, no_ack=m.no_ack, exclusive=m.exclusive)
        # Consume-Ok goes out before the first delivery, which add_consumer may trigger.
        if not m.nowait:
            self.owner.send_method(self.number, commands.Basic.ConsumeOk(consumer_tag=tag))
        self.consumers[tag] = consumer
        queue.add_consumer(consumer, priority=priority)

    async def _basic_cancel(self, m: commands.Basic.Cancel) -> None:
        consumer = self.consumers.pop(m.consumer_tag or "", None)
        if consumer is not None:
            # Its unsettled deliveries stay with the channel until acked or the channel closes.
            consumer.queue.remove_consumer(consumer, requeue_unacked=False)
        if not m.nowait:
            self.owner.send_method(
                self.number, commands.Basic.CancelOk(consumer_tag=m.consumer_tag)
            )

    async def _basic_get(self, m: commands.Basic.Get) -> None:
        queue = self._queue(m.queue)
        delivery = queue.basic_get(m.no_ack)
        if delivery is None:
            self.owner.send_method(self.number, commands.Basic.GetEmpty())
            return
        tag = self._next_tag
        self._next_tag += 1
        if not m.no_ack:
            self.unacked[tag] = (delivery, None)
        message = delivery.message
        self.owner.send_raw(
            self.owner.writer.get_ok(
                self.number,
                tag,
                delivery.redelivered,
                message.exchange.encode("utf-8"),
                message.routing_key.encode("utf-8"),
                delivery.message_count,
                message.properties,
                message.body,
            )
        )

    async def _basic_ack(self, m: commands.Basic.Ack) -> None:
        tags = self._select_tags(m.delivery_tag or 0, bool(m.multiple))
        self._tx_or_now(lambda: self._settle(tags, _ack))

    async def _basic_nack(self, m: commands.Basic.Nack) -> None:
        tags = self._select_tags(m.delivery_tag or 0, bool(m.multiple))
        requeue = bool(m.requeue)
        self._tx_or_now(lambda: self._settle(tags, _rejecter(requeue)))

    async def _basic_reject(self, m: commands.Basic.Reject) -> None:
        tags = self._select_tags(m.delivery_tag or 0, False)
        requeue = bool(m.requeue)
        self._tx_or_now(lambda: self._settle(tags, _rejecter(requeue)))

    def _tx_or_now(self, settle: Callable[[], None]) -> None:
        if self.tx_mode:
            self._tx_settles.append(settle)
        else:
            settle()

    async def _basic_recover(self, m: commands.Basic.Recover) -> None:
        self._recover()
        self.owner.send_method(self.number, commands.Basic.RecoverOk())

    async def _basic_recover_async(self, m: commands.Basic.RecoverAsync) -> None:
        self._recover()

    def _recover(self) -> None:
        """Requeue every unsettled delivery (RabbitMQ treats requeue=false the same way)."""
        self._settle(list(self.unacked), _rejecter(True))

    async def _channel_flow(self, m: commands.Channel.Flow) -> None:
        self.active = bool(m.active)
        self.owner.send_method(self.number, commands.Channel.FlowOk(active=m.active))
        if m.active:
            self._dispatch_consumed()

    # -- confirm and tx classes ----------------------------------------------------------------

    async def _confirm_select(self, m: commands.Confirm.Select) -> None:
        if self.tx_mode:
            raise AMQPChannelError(
                ReplyCode.PRECONDITION_FAILED,
                "cannot switch from tx to confirm mode",
                class_id=85,
                method_id=10,
            )
        if self.confirms is None:
            self.confirms = PublisherConfirms(
                partial(self.owner.send_method, self.number), self.owner.request_stats
            )
        if not m.nowait:
            self.owner.send_method(self.number, commands.Confirm.SelectOk())

    async def _tx_select(self, m: commands.Tx.Select) -> None:
        if self.confirms is not None:
            raise AMQPChannelError(
                ReplyCode.PRECONDITION_FAILED,
                "cannot switch from confirm to tx mode",
                class_id=90,
                method_id=10,
            )
        self.tx_mode = True
        self.owner.send_method(self.number, commands.Tx.SelectOk())

    def _require_tx(self, m: base.Frame) -> None:
        if not self.tx_mode:
            raise AMQPChannelError(
                ReplyCode.PRECONDITION_FAILED,
                "channel is not transactional",
                class_id=90,
                method_id=m.index & 0xFFFF,
            )

    async def _tx_commit(self, m: commands.Tx.Commit) -> None:
        self._require_tx(m)
        publishes, self._tx_publishes = self._tx_publishes, []
        settles, self._tx_settles = self._tx_settles, []
        vhost = self.vhost
        results: list[PublishResult] = []
        for message, mandatory in publishes:
            result = vhost.publish_nowait(message)
            if mandatory and not result.routed:
                self._return_unroutable(message)
            results.append(result)
        for settle in settles:
            settle()
        for result in results:
            await result.wait_durable()
        self.owner.send_method(self.number, commands.Tx.CommitOk())

    async def _tx_rollback(self, m: commands.Tx.Rollback) -> None:
        self._require_tx(m)
        self._tx_publishes.clear()
        self._tx_settles.clear()
        self.owner.send_method(self.number, commands.Tx.RollbackOk())


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


def _random_suffix() -> str:
    return secrets.token_urlsafe(16)


def _with_method(exc: BrokerError, m: base.Frame) -> AMQPChannelError | AMQPConnectionError:
    """Attach the failing method's ids to a core refusal (the reply code stays the core's)."""
    code, text = broker_error_reply(exc)
    error = error_for(code, text, class_id=m.index >> 16, method_id=m.index & 0xFFFF)
    assert isinstance(error, AMQPChannelError | AMQPConnectionError)
    return error

