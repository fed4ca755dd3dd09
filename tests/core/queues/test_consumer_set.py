"""Who a queue offers messages to: consumer priorities (the highest priority with credit first,
round robin among equals, lower ones while higher ones are blocked), single active consumer,
exclusive consumers."""

from __future__ import annotations

from collections.abc import Collection

import pytest
from queue_helpers import RecordingConsumer

from wharf.core.queues.consumer_set import ConsumerSet
from wharf.core.queues.consumers import Consumer, Delivery
from wharf.core.queues.message import Message
from wharf.core.queues.queue import Queue
from wharf.core.queues.vhost import VirtualHost
from wharf.errors import (
    AccessRefusedError,
)


def msg(body: bytes, key: str = "q", **kw: object) -> Message:
    return Message.build("", key, body, **kw)  # type: ignore[arg-type]


def publish(vhost: VirtualHost, count: int, start: int = 0) -> None:
    for i in range(start, start + count):
        assert vhost.publish_nowait(Message.build("", "q", b"%d" % i)).routed


async def test_higher_priority_with_credit_receives_everything(vhost: VirtualHost) -> None:
    q = await vhost.declare_queue("q")
    low, high = RecordingConsumer("low"), RecordingConsumer("high")
    q.add_consumer(low, priority=1)
    q.add_consumer(high, priority=5)
    publish(vhost, 6)
    assert high.bodies() == [b"%d" % i for i in range(6)]
    assert low.bodies() == []


async def test_blocked_higher_priority_lets_lower_receive_then_takes_over(
    vhost: VirtualHost,
) -> None:
    q = await vhost.declare_queue("q")
    high = RecordingConsumer("high", prefetch=2)
    low = RecordingConsumer("low", prefetch=10)
    q.add_consumer(low, priority=-3)  # negative priorities are ordered too
    q.add_consumer(high, priority=10)
    publish(vhost, 5)
    assert high.bodies() == [b"0", b"1"]  # up to its prefetch
    assert low.bodies() == [b"2", b"3", b"4"]  # the rest, while high is blocked
    high.ack_all()  # credit back: high is served first again
    publish(vhost, 3, start=5)
    assert high.bodies() == [b"0", b"1", b"5", b"6"]
    assert low.bodies() == [b"2", b"3", b"4", b"7"]


async def test_credit_returning_to_high_priority_takes_ready_backlog(vhost: VirtualHost) -> None:
    q = await vhost.declare_queue("q")
    high = RecordingConsumer("high", prefetch=1)
    low = RecordingConsumer("low", prefetch=1)
    q.add_consumer(high, priority=2)
    q.add_consumer(low, priority=1)
    publish(vhost, 4)
    assert high.bodies() == [b"0"] and low.bodies() == [b"1"]
    assert q.message_count == 2
    high.ack_all()  # the ack dispatches: the next ready message goes to high
    assert high.bodies() == [b"0", b"2"] and low.bodies() == [b"1"]


async def test_equal_priorities_round_robin_above_a_lower_one(vhost: VirtualHost) -> None:
    q = await vhost.declare_queue("q")
    a, b = RecordingConsumer("a"), RecordingConsumer("b")
    low = RecordingConsumer("low")
    q.add_consumer(a, priority=3)
    q.add_consumer(low)
    q.add_consumer(b, priority=3)
    publish(vhost, 4)
    assert a.bodies() == [b"0", b"2"] and b.bodies() == [b"1", b"3"]
    assert low.bodies() == []


async def test_removing_the_high_priority_consumer_serves_the_lower_one(
    vhost: VirtualHost,
) -> None:
    q = await vhost.declare_queue("q")
    high, low = RecordingConsumer("high"), RecordingConsumer("low")
    q.add_consumer(high, priority=1)
    q.add_consumer(low)
    publish(vhost, 2)
    q.remove_consumer(high)  # its two unacked messages come back and go to low
    assert sorted(low.bodies()) == [b"0", b"1"]
    publish(vhost, 1, start=2)
    assert low.bodies()[-1] == b"2"
    assert q.consumer_count == 1
async def test_single_active_consumer(vhost: VirtualHost) -> None:
    q = await vhost.declare_queue("q", arguments={"x-single-active-consumer": True})
    a, b = RecordingConsumer("a"), RecordingConsumer("b")
    q.add_consumer(a)
    q.add_consumer(b)
    for i in range(3):
        vhost.publish_nowait(msg(b"%d" % i))
    assert len(a.deliveries) == 3 and not b.deliveries and q.active_consumer is a
    q.remove_consumer(a)
    assert q.active_consumer is b and len(b.deliveries) == 3


async def test_exclusive_consumer(vhost: VirtualHost) -> None:
    q = await vhost.declare_queue("q")
    q.add_consumer(RecordingConsumer("a", exclusive=True))
    with pytest.raises(AccessRefusedError):
        q.add_consumer(RecordingConsumer("b"))
    q2 = await vhost.declare_queue("q2")
    q2.add_consumer(RecordingConsumer("a"))
    with pytest.raises(AccessRefusedError):
        q2.add_consumer(RecordingConsumer("b", exclusive=True))


class Member:
    """A consumer for ConsumerSet alone: credit is a flag, deliveries are not made."""

    def __init__(self, tag: str, *, exclusive: bool = False) -> None:
        self.tag = tag
        self.no_ack = False
        self.exclusive = exclusive
        self.credit = True

    def can_take(self) -> bool:
        return self.credit

    def deliver(self, delivery: Delivery) -> None:
        raise AssertionError("ConsumerSet never delivers by itself")

    def cancelled(self, queue: Queue) -> None:
        raise AssertionError("ConsumerSet never cancels by itself")


def offer_all(consumers: ConsumerSet, ready: int, unacked: Collection[str] = ()) -> list[str]:
    """Serve ``ready`` messages; the tags they were offered to, in order."""
    offered: list[str] = []

    def offer(consumer: Consumer) -> bool:
        offered.append(consumer.tag)
        return len(offered) < ready

    consumers.serve(offer, lambda: len(offered) < ready, lambda c: c.tag in unacked)
    return offered


def test_serve_order_by_priority_round_robin_and_credit() -> None:
    consumers = ConsumerSet(single_active=False)
    low, high_a, high_b = Member("low"), Member("high-a"), Member("high-b")
    consumers.add(low, 0)
    consumers.add(high_a, 5)
    consumers.add(high_b, 5)
    assert consumers.members == (low, high_a, high_b)
    assert offer_all(consumers, 4) == ["high-a", "high-b", "high-a", "high-b"]
    high_a.credit = high_b.credit = False
    assert offer_all(consumers, 2) == ["low", "low"]
    assert consumers.active is None  # only under single-active-consumer


def test_single_active_hand_over_waits_for_the_active_ones_acks() -> None:
    consumers = ConsumerSet(single_active=True)
    first, better = Member("first"), Member("better")
    consumers.add(first, 0)
    assert consumers.active is first
    consumers.add(better, 9)
    assert offer_all(consumers, 3, unacked={"first"}) == []  # nobody while first holds some
    assert consumers.active is first
    assert offer_all(consumers, 2) == ["better", "better"]
    assert consumers.active is better
    assert consumers.remove(better) and not consumers.remove(better)
    assert consumers.active is first


def test_exclusivity_and_clear() -> None:
    consumers = ConsumerSet(single_active=False)
    only = Member("only", exclusive=True)
    assert not consumers.refuses(only)
    consumers.add(only, 0)
    assert consumers.refuses(Member("other"))
    assert consumers.clear() == [only]
    assert not consumers and len(consumers) == 0 and only not in consumers
