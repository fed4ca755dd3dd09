"""Consumer priorities: the highest priority with credit is served first, equal priorities share
round robin, and a blocked higher priority lets lower ones receive."""

from __future__ import annotations

from queue_helpers import RecordingConsumer

from wharf.core.queues.message import Message
from wharf.core.queues.vhost import VirtualHost


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
