"""What an AMQP fault test checks: every confirmed message delivered, none after its ack.

A test publishes unique bodies with publisher confirms and records the confirmed ones; its
consumers record each delivery and each ack (:class:`Journal`, thread-safe: pika consumers run
in threads). :func:`check` then reports:

* **lost**: confirmed bodies never delivered;
* **after_ack**: deliveries of a body after an ack of it that certainly committed, that is an
  ack sent through a node that stayed alive (an ack sent to a node that was then killed may not
  have reached the database: its message coming back is at-least-once delivery, counted
  apart as ``redelivered_after_lost_ack``);
* the counts: confirmed, delivered (distinct), deliveries, redeliveries.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Container
from dataclasses import dataclass, field


@dataclass
class Journal:
    confirmed: set[bytes] = field(default_factory=set)
    deliveries: list[tuple[float, str, bytes, bool]] = field(default_factory=list)
    acks: list[tuple[float, str, bytes]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def confirm(self, body: bytes) -> None:
        with self._lock:
            self.confirmed.add(body)

    def delivered(self, consumer: str, body: bytes, redelivered: bool) -> None:
        with self._lock:
            self.deliveries.append((time.monotonic(), consumer, body, redelivered))

    def acked(self, consumer: str, body: bytes) -> None:
        with self._lock:
            self.acks.append((time.monotonic(), consumer, body))

    def delivered_bodies(self) -> set[bytes]:
        with self._lock:
            return {body for _, _, body, _ in self.deliveries}


@dataclass
class AMQPReport:
    confirmed: int
    delivered: int
    deliveries: int
    redeliveries: int
    lost: list[bytes]
    after_ack: list[bytes]
    redelivered_after_lost_ack: int

    @property
    def ok(self) -> bool:
        return not self.lost and not self.after_ack


def check(journal: Journal, dead_consumers: Container[str]) -> AMQPReport:
    """The report; consumers named in ``dead_consumers`` sent their acks to a killed node."""
    last_delivery: dict[bytes, float] = {}
    for at, _, body, _ in journal.deliveries:
        last_delivery[body] = max(at, last_delivery.get(body, at))
    after_ack: list[bytes] = []
    after_lost_ack = 0
    first_ack: dict[tuple[bytes, bool], float] = {}
    for at, consumer, body in journal.acks:
        key = (body, consumer in dead_consumers)
        first_ack[key] = min(at, first_ack.get(key, at))
    for (body, lost_ack), at in first_ack.items():
        if last_delivery.get(body, 0.0) > at:
            if lost_ack:
                after_lost_ack += 1
            else:
                after_ack.append(body)
    delivered = {body for _, _, body, _ in journal.deliveries}
    counts = Counter(body for _, _, body, _ in journal.deliveries)
    return AMQPReport(
        confirmed=len(journal.confirmed),
        delivered=len(delivered),
        deliveries=len(journal.deliveries),
        redeliveries=sum(c - 1 for c in counts.values()),
        lost=sorted(journal.confirmed - delivered),
        after_ack=sorted(after_ack),
        redelivered_after_lost_ack=after_lost_ack,
    )
