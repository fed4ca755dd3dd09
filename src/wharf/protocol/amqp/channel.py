"""One AMQP channel: its state and the dispatch of its methods to the broker core.

How it works
------------
:meth:`Channel.handle` receives the method frames of its channel number (the connection has
already dealt with Channel.Open/Close) and dispatches them through ``_methods``. A channel has
two halves, each in its own module:

* :class:`~wharf.protocol.amqp.publishing.Publishing`: Basic.Publish and its content, mandatory
  returns, the hand-off to publisher confirms; the connection gives it content frames directly;
* :class:`~wharf.protocol.amqp.consuming.Consuming`: Basic.Consume/Cancel/Get/Ack/Nack/Reject/
  Recover/Qos and Channel.Flow, delivery tags and the unsettled deliveries.

This module keeps what is left: the exchange and queue classes, Confirm.Select and the tx class.
Every handler is synchronous. The core's exchange and queue operations are coroutines (deleting
a queue removes its files); a handler hands such a coroutine to the connection with
``owner.await_core(coroutine, then)``, and ``then`` sends the reply once the adapter has awaited
it (the connection reads no further frame in between, so methods keep their order).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from pamqp import base, commands

from wharf.errors import BrokerError, NotFoundError, PreconditionError
from wharf.protocol.amqp.confirms import PublisherConfirms
from wharf.protocol.amqp.consuming import Consuming
from wharf.protocol.amqp.direct_reply import declared_reply_queue, is_reply_queue
from wharf.protocol.amqp.errors import (
    AMQPChannelError,
    AMQPConnectionError,
    ReplyCode,
    with_method,
)
from wharf.protocol.amqp.frames import FrameWriter, MethodFrame
from wharf.protocol.amqp.publishing import Publishing
from wharf.protocol.amqp.state import ChannelState
from wharf.protocol.amqp.timing import RequestObserver

if TYPE_CHECKING:
    from wharf.core.broker import Broker
    from wharf.core.queues.queue import Queue
    from wharf.core.queues.router import PublishResult
    from wharf.core.queues.vhost import VirtualHost

__all__ = ["Channel", "ChannelOwner"]


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

    def await_core(
        self, awaitable: Coroutine[Any, Any, Any], then: Callable[[Any], None]
    ) -> None: ...

    def confirms_for(self, channel: int) -> PublisherConfirms: ...


class Channel:
    """See the module docstring."""

    def __init__(self, owner: ChannelOwner, number: int) -> None:
        self.owner = owner
        self.number = number
        self.state = ChannelState.OPEN
        self.tx_mode = False
        self.publishing = Publishing(self)
        self.consuming = Consuming(self)
        consuming = self.consuming
        self._methods: dict[type[base.Frame], Callable[[Any], None]] = {
            commands.Exchange.Declare: self._exchange_declare,
            commands.Exchange.Delete: self._exchange_delete,
            commands.Exchange.Bind: self._exchange_bind,
            commands.Exchange.Unbind: self._exchange_unbind,
            commands.Queue.Declare: self._queue_declare,
            commands.Queue.Bind: self._queue_bind,
            commands.Queue.Unbind: self._queue_unbind,
            commands.Queue.Purge: self._queue_purge,
            commands.Queue.Delete: self._queue_delete,
            commands.Basic.Qos: consuming.qos,
            commands.Basic.Consume: consuming.consume,
            commands.Basic.Cancel: consuming.cancel,
            commands.Basic.Get: consuming.get,
            commands.Basic.Ack: consuming.ack,
            commands.Basic.Nack: consuming.nack,
            commands.Basic.Reject: consuming.reject,
            commands.Basic.Recover: consuming.recover,
            commands.Basic.RecoverAsync: consuming.recover_async,
            commands.Channel.Flow: consuming.flow,
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

    def queue(self, name: str) -> Queue:
        """The named queue; 404 if absent, 405 if another connection's exclusive queue."""
        return self.vhost.get_queue(name, self.owner)

    def send(self, method: base.Frame) -> None:
        """Send ``method`` on this channel."""
        self.owner.send_method(self.number, method)

    # -- frames --------------------------------------------------------------------------------

    def handle(self, event: MethodFrame) -> None:
        """A method frame of this channel."""
        self.publishing.method_received()
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
            handler(method)
        except BrokerError as exc:
            raise with_method(exc, method) from exc

    def release_now(self) -> None:
        """Cancel consumers, requeue unsettled deliveries, forget pending publishes and
        confirms (channel or connection closing)."""
        self.state = ChannelState.CLOSED if self.state is ChannelState.OPEN else self.state
        self.consuming.release()
        self.publishing.release()

    def _reply(self, m: base.Frame, reply: base.Frame) -> Callable[[object], None]:
        """A continuation sending ``reply`` unless ``m`` asked for no reply (``nowait``)."""

        def then(_: object) -> None:
            if not getattr(m, "nowait", False):
                self.send(reply)

        return then

    # -- exchange class ------------------------------------------------------------------------

    def _exchange_declare(self, m: commands.Exchange.Declare) -> None:
        coroutine = self.vhost.declare_exchange(
            m.exchange,
            m.exchange_type,
            durable=bool(m.durable),
            auto_delete=bool(m.auto_delete),
            internal=bool(m.internal),
            arguments=dict(m.arguments or {}),
            passive=bool(m.passive),
        )
        self.owner.await_core(coroutine, self._reply(m, commands.Exchange.DeclareOk()))

    def _exchange_delete(self, m: commands.Exchange.Delete) -> None:
        vhost = self.vhost
        then = self._reply(m, commands.Exchange.DeleteOk())
        if m.exchange not in vhost.exchanges:  # deleting an absent exchange succeeds (RabbitMQ)
            then(None)
            return
        self.owner.await_core(
            vhost.delete_exchange(m.exchange, if_unused=bool(m.if_unused)), then
        )

    def _exchange_bind(self, m: commands.Exchange.Bind) -> None:
        coroutine = self.vhost.bind_exchange(
            m.destination, m.source, m.routing_key, dict(m.arguments or {})
        )
        self.owner.await_core(coroutine, self._reply(m, commands.Exchange.BindOk()))

    def _exchange_unbind(self, m: commands.Exchange.Unbind) -> None:
        then = self._reply(m, commands.Exchange.UnbindOk())
        exchanges = self.vhost.exchanges
        if m.source and m.destination and (
            m.source not in exchanges or m.destination not in exchanges
        ):  # no such binding can exist: unbinding it succeeds (RabbitMQ)
            then(None)
            return
        coroutine = self.vhost.unbind_exchange(
            m.destination, m.source, m.routing_key, dict(m.arguments or {})
        )
        self.owner.await_core(coroutine, then)

    # -- queue class ---------------------------------------------------------------------------

    def _queue_declare(self, m: commands.Queue.Declare) -> None:
        if is_reply_queue(m.queue):
            declare_ok = declared_reply_queue(self, m.queue)
            if not m.nowait:
                self.send(declare_ok)
            return
        coroutine = self.vhost.declare_queue(
            m.queue,
            durable=bool(m.durable),
            exclusive=bool(m.exclusive),
            auto_delete=bool(m.auto_delete),
            arguments=dict(m.arguments or {}),
            passive=bool(m.passive),
            owner=self.owner,
        )

        def declared(queue: Queue) -> None:
            if not m.nowait:
                self.send(
                    commands.Queue.DeclareOk(
                        queue=queue.name,
                        message_count=queue.message_count,
                        consumer_count=queue.consumer_count,
                    )
                )

        self.owner.await_core(coroutine, declared)

    def _queue_bind(self, m: commands.Queue.Bind) -> None:
        coroutine = self.vhost.bind_queue(
            m.queue, m.exchange, m.routing_key, dict(m.arguments or {}), owner=self.owner
        )
        self.owner.await_core(coroutine, self._reply(m, commands.Queue.BindOk()))

    def _queue_unbind(self, m: commands.Queue.Unbind) -> None:
        then = self._reply(m, commands.Queue.UnbindOk())
        vhost = self.vhost
        if m.exchange and (m.queue not in vhost.queues or m.exchange not in vhost.exchanges):
            then(None)  # no such binding can exist: unbinding it succeeds (RabbitMQ)
            return
        coroutine = self.vhost.unbind_queue(
            m.queue, m.exchange, m.routing_key, dict(m.arguments or {}), owner=self.owner
        )
        self.owner.await_core(coroutine, then)

    def _queue_purge(self, m: commands.Queue.Purge) -> None:
        def purged(count: int) -> None:
            if not m.nowait:
                self.send(commands.Queue.PurgeOk(message_count=count))

        self.owner.await_core(self.vhost.purge_queue(m.queue, owner=self.owner), purged)

    def _queue_delete(self, m: commands.Queue.Delete) -> None:
        def deleted(count: int) -> None:
            if not m.nowait:
                self.send(commands.Queue.DeleteOk(message_count=count))
            self.consuming.release_cancels()

        vhost = self.vhost
        if m.queue not in vhost.queues:  # deleting an absent queue succeeds (RabbitMQ)
            deleted(0)
            return
        self.consuming.hold_cancels()
        coroutine = vhost.delete_queue(
            m.queue, if_unused=bool(m.if_unused), if_empty=bool(m.if_empty), owner=self.owner
        )
        self.owner.await_core(coroutine, deleted)

    # -- confirm and tx classes ----------------------------------------------------------------

    def _confirm_select(self, m: commands.Confirm.Select) -> None:
        if self.tx_mode:
            raise AMQPChannelError(
                ReplyCode.PRECONDITION_FAILED,
                "cannot switch from tx to confirm mode",
                class_id=85,
                method_id=10,
            )
        self.publishing.select_confirms()
        if not m.nowait:
            self.send(commands.Confirm.SelectOk())

    def _tx_select(self, m: commands.Tx.Select) -> None:
        if self.publishing.confirms is not None:
            raise AMQPChannelError(
                ReplyCode.PRECONDITION_FAILED,
                "cannot switch from confirm to tx mode",
                class_id=90,
                method_id=10,
            )
        self.tx_mode = True
        self.send(commands.Tx.SelectOk())

    def _require_tx(self, m: base.Frame) -> None:
        if not self.tx_mode:
            raise AMQPChannelError(
                ReplyCode.PRECONDITION_FAILED,
                "channel is not transactional",
                class_id=90,
                method_id=m.index & 0xFFFF,
            )

    def _tx_commit(self, m: commands.Tx.Commit) -> None:
        self._require_tx(m)
        results = self.publishing.commit()
        self.consuming.commit()
        self.owner.await_core(_all_durable(results), self._reply(m, commands.Tx.CommitOk()))

    def _tx_rollback(self, m: commands.Tx.Rollback) -> None:
        self._require_tx(m)
        self.publishing.tx_publishes.clear()
        self.consuming.tx_settles.clear()
        self.send(commands.Tx.RollbackOk())


async def _all_durable(results: list[PublishResult]) -> None:
    """Return once every message of a committed transaction is stored. A message a full
    ``reject-publish`` queue refused at its commit (cluster mode decides there) is dropped, as
    single-node mode drops it at publish: the transaction commits the rest."""
    for result in results:
        try:
            await result.wait_durable()
        except PreconditionError:
            if not result.rejected:
                raise
