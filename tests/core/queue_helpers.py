"""Helpers for queue tests: the ``open_registry`` fixture's type, a consumer that records
deliveries and takes up to ``prefetch`` unacked ones, and durable queues filled with
persistent messages and emptied again."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from wharf.core.queues.consumers import Delivery
from wharf.core.queues.message import Message
from wharf.core.queues.queue import Queue
from wharf.core.queues.registry import VhostRegistry
from wharf.core.queues.vhost import VirtualHost

Opener = Callable[..., Awaitable[VhostRegistry]]


def persistent(queue: str, body: bytes) -> Message:
    return Message.build("", queue, body, persistent=True)


async def fill(vhost: VirtualHost, queue: str, count: int) -> None:
    """Declare the durable ``queue`` and publish ``count`` persistent messages into it,
    ``<queue>-0`` and on, each waited for until durable."""
    await vhost.declare_queue(queue, durable=True)
    for i in range(count):
        await vhost.publish(persistent(queue, b"%s-%d" % (queue.encode(), i)))


def take_all(queue: Queue) -> list[tuple[bytes, bool, int]]:
    """(body, redelivered, delivery count) of every ready message, acknowledged."""
    got = []
    while (delivery := queue.basic_get(no_ack=True)) is not None:
        got.append((delivery.message.body, delivery.redelivered, delivery.delivery_count))
    return got


class RecordingConsumer:
    def __init__(
        self, tag: str = "c", *, prefetch: int = 0, no_ack: bool = False, exclusive: bool = False
    ) -> None:
        self._tag = tag
        self._no_ack = no_ack
        self._exclusive = exclusive
        self.prefetch = prefetch  # 0 = unlimited
        self.deliveries: list[Delivery] = []
        self.outstanding: dict[int, Delivery] = {}
        self.cancelled_by: list[str] = []

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
        return self.prefetch == 0 or len(self.outstanding) < self.prefetch

    def deliver(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        if not self._no_ack:
            self.outstanding[delivery.delivery_id] = delivery

    def cancelled(self, queue: Queue) -> None:
        self.cancelled_by.append(queue.name)

    def ack_all(self) -> None:
        ids = list(self.outstanding)
        self.outstanding.clear()
        if ids:
            next(iter(self.deliveries)).queue.ack(ids)

    def bodies(self) -> list[bytes]:
        return [d.message.body for d in self.deliveries]
