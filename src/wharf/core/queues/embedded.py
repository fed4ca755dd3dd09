"""Consuming a queue from inside the process: an async iterator of messages to ack or reject.

How it works: a :class:`QueueSubscription` is a :class:`~wharf.core.queues.consumers.Consumer` of
one queue. Its credit is its prefetch: it can take another message while fewer than ``prefetch``
are waiting in its inbox or handed out and unsettled. The queue pushes deliveries through
:meth:`QueueSubscription.deliver` into an ``asyncio.Queue``; iterating the subscription takes
them out as :class:`ReceivedMessage` objects. Settling one (ack, reject) gives the credit back,
so the subscription asks the queue to :meth:`~wharf.core.queues.queue.Queue.dispatch` again.

Toward the queue a subscription always acknowledges explicitly: with ``no_ack`` the iterator
acks each message as it hands it over, so messages still buffered in the inbox are not lost
when the subscription ends. Ending it (:meth:`QueueSubscription.close`, what leaving
``broker.consume(...)`` does) unsubscribes with ``requeue_unacked``: every message it was
given and did not settle goes back to its place in the queue, marked redelivered, as when an
AMQP channel closes. When the broker ends the subscription (the queue is deleted, the broker
closes), iteration stops after the messages already received.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from wharf.core.queues.consumers import Delivery
from wharf.errors import BrokerError, PreconditionError

if TYPE_CHECKING:
    from wharf.core.queues.message import Message
    from wharf.core.queues.queue import Queue

__all__ = ["GetHolder", "QueueSubscription", "ReceivedMessage"]


class Holder(Protocol):
    """Who a received message was handed to: says whether it can still be settled."""

    def check_settle(self, delivery_id: int) -> None:
        """Raise (PreconditionError, BrokerError) if ``delivery_id`` can no longer be settled."""
        ...

    def settled(self, delivery_id: int) -> None:
        """It was acked or rejected."""
        ...


class ReceivedMessage:
    """One message received from a queue, by :meth:`Broker.consume` or :meth:`Broker.get`.

    ``body``, ``headers`` (the decoded headers table), ``redelivered`` (handed out before and
    returned), ``delivery_count`` (1 on first delivery), ``exchange`` and ``routing_key`` it
    was published with, ``priority``, ``message`` (the whole :class:`Message` with every AMQP
    property). Settle it once with :meth:`ack` or :meth:`reject`; a message received with
    ``no_ack`` is settled already.
    """

    __slots__ = ("_delivery", "_owner", "_settled")

    def __init__(self, delivery: Delivery, owner: Holder, *, settled: bool) -> None:
        self._delivery = delivery
        self._owner = owner
        self._settled = settled

    @property
    def message(self) -> Message:
        return self._delivery.message

    @property
    def body(self) -> bytes:
        return self._delivery.message.body

    @property
    def headers(self) -> dict[str, Any]:
        return self._delivery.message.headers

    @property
    def exchange(self) -> str:
        return self._delivery.message.exchange

    @property
    def routing_key(self) -> str:
        return self._delivery.message.routing_key

    @property
    def priority(self) -> int:
        return self._delivery.message.priority

    @property
    def redelivered(self) -> bool:
        return self._delivery.redelivered

    @property
    def delivery_count(self) -> int:
        return self._delivery.delivery_count

    @property
    def queue(self) -> str:
        return self._delivery.queue.name

    @property
    def settled(self) -> bool:
        return self._settled

    async def ack(self) -> None:
        """Acknowledge: the message leaves the queue for good."""
        self._settle()
        self._delivery.queue.ack((self._delivery.delivery_id,))
        self._credit_back()

    async def reject(self, *, requeue: bool = True) -> None:
        """Give the message back: to its place in the queue (``requeue``, delivered again
        marked redelivered) or to the queue's dead-letter exchange, if it has one (otherwise
        it is dropped)."""
        self._settle()
        self._delivery.queue.reject((self._delivery.delivery_id,), requeue)
        self._credit_back()

    def _settle(self) -> None:
        """Check the message can still be settled and mark it settled (raises
        PreconditionError: settled already, or its subscription ended and returned it;
        BrokerError: the broker is closed)."""
        if self._settled:
            raise PreconditionError(f"message {self._delivery.delivery_id} is already settled")
        self._owner.check_settle(self._delivery.delivery_id)
        self._settled = True

    def _credit_back(self) -> None:
        self._owner.settled(self._delivery.delivery_id)

    def __repr__(self) -> str:
        return (
            f"ReceivedMessage(queue={self.queue!r}, body={self.body[:32]!r}, "
            f"redelivered={self.redelivered}, delivery_count={self.delivery_count})"
        )


class GetHolder:
    """The holder of messages taken with ``Broker.get``: settleable while the broker is open
    (a restart returns the unsettled ones to their queues)."""

    def __init__(self) -> None:
        self.open = True

    def check_settle(self, delivery_id: int) -> None:
        if not self.open:
            raise BrokerError("the broker is closed")

    def settled(self, delivery_id: int) -> None:
        """Nothing to do: ``get`` has no credit to give back."""


_END = None  # put in the inbox when the subscription ends


class QueueSubscription:
    """A consumer of one queue for in-process use; see the module docstring.

    ``prefetch`` bounds the messages received and not yet settled (0: no bound).
    """

    def __init__(
        self, queue: Queue, tag: str, *, prefetch: int, no_ack: bool, exclusive: bool
    ) -> None:
        if prefetch < 0:
            raise PreconditionError(f"prefetch must be 0 (no limit) or more, not {prefetch}")
        self.queue = queue
        self.prefetch = prefetch
        self._tag = tag
        self._auto_ack = no_ack
        self._exclusive = exclusive
        self._inbox: asyncio.Queue[Delivery | None] = asyncio.Queue()
        self._held: set[int] = set()  # delivery ids received and not yet settled
        self._ended = False

    # ---------------------------------------------------------------- the Consumer protocol

    @property
    def tag(self) -> str:
        return self._tag

    @property
    def no_ack(self) -> bool:
        return False  # see the module docstring: auto-ack happens as the iterator hands over

    @property
    def exclusive(self) -> bool:
        return self._exclusive

    def can_take(self) -> bool:
        return not self._ended and (self.prefetch == 0 or len(self._held) < self.prefetch)

    def credit(self) -> int:
        """How many more deliveries :meth:`can_take` would allow now (0: none; a large
        number without a prefetch limit)."""
        if self._ended:
            return 0
        return 1 << 30 if self.prefetch == 0 else max(self.prefetch - len(self._held), 0)

    def deliver(self, delivery: Delivery) -> None:
        self._held.add(delivery.delivery_id)
        self._inbox.put_nowait(delivery)

    def cancelled(self, queue: Queue) -> None:
        self._end()

    # ---------------------------------------------------------------------- for the caller

    @property
    def ended(self) -> bool:
        return self._ended

    @property
    def unsettled(self) -> int:
        """Messages received (buffered or handed over) and not yet settled."""
        return len(self._held)

    def start(self) -> None:
        """Subscribe to the queue (raises AccessRefusedError against an exclusive consumer)."""
        self.queue.add_consumer(self)

    def close(self) -> None:
        """Unsubscribe; unsettled messages go back to the queue, redelivered."""
        if self._ended:
            return
        self._end()
        self._held.clear()
        self.queue.remove_consumer(self, requeue_unacked=True)

    def _end(self) -> None:
        if not self._ended:
            self._ended = True
            self._inbox.put_nowait(_END)

    def check_settle(self, delivery_id: int) -> None:
        if delivery_id not in self._held:
            raise PreconditionError(
                f"message {delivery_id} was returned to queue '{self.queue.name}' when its "
                "subscription ended"
            )

    def settled(self, delivery_id: int) -> None:
        """A message was acked or rejected: its credit comes back."""
        self._held.discard(delivery_id)
        if not self._ended:
            self.queue.dispatch()

    def __aiter__(self) -> QueueSubscription:
        return self

    async def __anext__(self) -> ReceivedMessage:
        delivery = await self._inbox.get()
        if delivery is None or delivery.delivery_id not in self._held:
            # the end, or a message already returned to the queue by close()
            self._inbox.put_nowait(_END)  # later calls end too
            raise StopAsyncIteration
        received = ReceivedMessage(delivery, self, settled=False)
        if self._auto_ack:
            await received.ack()
        return received
