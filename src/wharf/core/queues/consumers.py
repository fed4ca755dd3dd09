"""What a queue hands out, and what it hands it to.

A front end (an AMQP channel, the HTTP API, an embedding application) implements
:class:`Consumer` and registers it with :meth:`Queue.add_consumer
<wharf.core.queues.queue.Queue.add_consumer>`. The queue pushes :class:`Delivery` objects through
:meth:`Consumer.deliver` while :meth:`Consumer.can_take` says there is credit (prefetch, channel
flow). ``deliver`` must not block: it queues the frame and returns. When credit comes back (an
ack, a larger prefetch, channel.flow on), the front end calls :meth:`Queue.dispatch
<wharf.core.queues.queue.Queue.dispatch>` on the queues it consumes from.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol

from wharf.core.queues.message import Message

if TYPE_CHECKING:
    from wharf.core.queues.queue import Queue

__all__ = ["Consumer", "Delivery"]


class Consumer(Protocol):
    """A subscriber of one queue.

    ``tag`` names it (basic.consume's consumer tag); ``no_ack`` makes deliveries settled on
    delivery (auto-ack); ``exclusive`` asks to be the queue's only consumer.
    """

    @property
    def tag(self) -> str: ...

    @property
    def no_ack(self) -> bool: ...

    @property
    def exclusive(self) -> bool: ...

    def can_take(self) -> bool:
        """Whether one more delivery may be pushed now (prefetch credit, flow)."""
        ...

    def deliver(self, delivery: Delivery) -> None:
        """Take one delivery; called on the event loop, must not block."""
        ...

    def cancelled(self, queue: Queue) -> None:
        """The broker ended this subscription (queue deleted): send basic.cancel."""
        ...


class Delivery(NamedTuple):
    """One message handed out by a queue.

    ``delivery_id`` identifies the message within its queue until it is settled: pass it back
    to :meth:`Queue.ack <wharf.core.queues.queue.Queue.ack>` or :meth:`Queue.reject
    <wharf.core.queues.queue.Queue.reject>` (front ends map their own delivery tags onto it).
    ``message_count`` is the number of ready messages left (basic.get-ok). Immutable (a named
    tuple: one is made per message handed out, so construction is kept cheap).
    """

    queue: Queue
    delivery_id: int
    message: Message
    redelivered: bool
    delivery_count: int
    consumer_tag: str | None
    message_count: int = 0
