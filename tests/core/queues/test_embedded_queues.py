"""The embedded queues API of Broker: declare, publish, consume/ack/reject, get, on real storage."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from wharf.core.broker import Broker
from wharf.core.queues.embedded import QueueSubscription, ReceivedMessage
from wharf.errors import AccessRefusedError, BrokerError, NotFoundError, PreconditionError


async def take(messages: QueueSubscription, count: int) -> list[ReceivedMessage]:
    """The next ``count`` messages of a subscription (generous deadline)."""
    out: list[ReceivedMessage] = []
    async with asyncio.timeout(30):
        async for message in messages:
            out.append(message)
            if len(out) == count:
                break
    return out


async def settle_loop() -> None:
    """Let callbacks already scheduled on the loop run."""
    for _ in range(5):
        await asyncio.sleep(0)


async def test_publish_consume_ack(tmp_path: Path) -> None:
    async with Broker.open(tmp_path) as broker:
        await broker.declare_queue("jobs")
        result = await broker.publish("jobs", b"one", headers={"kind": "test", "n": 1})
        assert result.routed and not result.rejected and result.queues == ["jobs"]
        await broker.publish("jobs", b"two")
        async with broker.consume("jobs") as messages:
            first, second = await take(messages, 2)
            assert (first.body, second.body) == (b"one", b"two")
            assert first.headers == {"kind": "test", "n": 1}
            assert second.headers == {}
            assert not first.redelivered and first.delivery_count == 1
            assert first.queue == "jobs" and first.routing_key == "jobs" and first.exchange == ""
            assert first.message.persistent
            assert broker.queue("jobs").unacked_count == 2
            await first.ack()
            await second.ack()
            assert first.settled
            with pytest.raises(PreconditionError):
                await first.ack()
        queue = broker.queue("jobs")
        assert (queue.message_count, queue.unacked_count, queue.acked) == (0, 0, 2)


async def test_publish_to_missing_queue_is_an_error(tmp_path: Path) -> None:
    async with Broker.open(tmp_path) as broker:
        with pytest.raises(NotFoundError):
            await broker.publish("nowhere", b"x")
        with pytest.raises(NotFoundError):
            async with broker.consume("nowhere"):
                pass
        unrouted = await broker.publish("amq.direct", b"x", routing_key="nobody")
        assert not unrouted.routed


async def test_prefetch_bounds_unsettled_messages(tmp_path: Path) -> None:
    async with Broker.open(tmp_path) as broker:
        await broker.declare_queue("jobs")
        for n in range(10):
            await broker.publish("jobs", str(n).encode())
        async with broker.consume("jobs", prefetch=3) as messages:
            got = await take(messages, 3)
            await settle_loop()
            queue = broker.queue("jobs")
            assert messages.unsettled == 3
            assert (queue.unacked_count, queue.message_count) == (3, 7)
            await got[0].ack()
            await settle_loop()
            assert (queue.unacked_count, queue.message_count) == (3, 6)
            # the credit of the ack fetched b"3"; a requeued message goes back to its place
            # at the head and, with the credit it returns, comes straight back
            await got[1].reject(requeue=True)
            fetched, again = await take(messages, 2)
            assert (fetched.body, fetched.redelivered) == (b"3", False)
            assert (again.body, again.redelivered, again.delivery_count) == (b"1", True, 2)
            assert (queue.unacked_count, queue.message_count) == (3, 6)
        assert [m.body for m in got] == [b"0", b"1", b"2"]


async def test_leaving_the_context_redelivers_unsettled(tmp_path: Path) -> None:
    async with Broker.open(tmp_path) as broker:
        await broker.declare_queue("jobs")
        for body in (b"a", b"b", b"c"):
            await broker.publish("jobs", body)
        async with broker.consume("jobs", prefetch=2) as messages:
            a, b = await take(messages, 2)
        queue = broker.queue("jobs")
        assert (queue.consumer_count, queue.unacked_count, queue.message_count) == (0, 0, 3)
        with pytest.raises(PreconditionError):
            await b.ack()  # it went back to the queue when the block was left
        async with broker.consume("jobs", prefetch=10) as messages:
            got = await take(messages, 3)
            assert [(m.body, m.redelivered, m.delivery_count) for m in got] == [
                (b"a", True, 2),
                (b"b", True, 2),
                (b"c", False, 1),
            ]
            for message in got:
                await message.ack()
        assert queue.message_count == 0


async def test_iterator_stops_when_the_context_is_left_from_another_task(
    tmp_path: Path,
) -> None:
    async with Broker.open(tmp_path) as broker:
        await broker.declare_queue("jobs")
        seen: list[bytes] = []
        started = asyncio.Event()

        async with broker.consume("jobs") as messages:

            async def reader() -> None:
                started.set()
                async for message in messages:
                    seen.append(message.body)
                    await message.ack()

            task = asyncio.create_task(reader())
            await started.wait()
            await broker.publish("jobs", b"x")
            async with asyncio.timeout(30):
                while not seen:
                    await asyncio.sleep(0.01)
        async with asyncio.timeout(30):
            await task
        assert seen == [b"x"]


async def test_durable_across_reopen(tmp_path: Path) -> None:
    async with Broker.open(tmp_path) as broker:
        await broker.declare_queue("jobs", arguments={"x-max-priority": 5})
        for body in (b"acked", b"unacked", b"ready"):
            await broker.publish("jobs", body)
        await broker.publish("jobs", b"transient", persistent=False)
        async with broker.consume("jobs", prefetch=2) as messages:
            acked, unacked = await take(messages, 2)
            await acked.ack()
            # leaving the block returns `unacked` to the queue
    assert messages.ended
    async with Broker.open(tmp_path) as broker:
        queue = broker.queue("jobs")
        assert queue.arguments == {"x-max-priority": 5}
        assert queue.message_count == 2  # acked and transient gone
        first = await broker.get("jobs")
        second = await broker.get("jobs")
        assert first is not None and second is not None
        assert (first.body, first.redelivered) == (b"unacked", True)
        # prefetched into the subscription by the credit of the ack: delivered once, too
        assert (second.body, second.redelivered) == (b"ready", True)
        assert await broker.get("jobs") is None


async def test_unsettled_message_survives_broker_close_inside_the_block(
    tmp_path: Path,
) -> None:
    broker = await Broker.start(tmp_path)
    try:
        await broker.declare_queue("jobs")
        await broker.declare_queue("other")
        await broker.publish("jobs", b"x")
        await broker.publish("other", b"y")
        taken = await broker.get("other")
        assert taken is not None
        async with broker.consume("jobs") as messages:
            (message,) = await take(messages, 1)
            await broker.close()
            with pytest.raises(PreconditionError):
                await message.ack()
            with pytest.raises(BrokerError):
                await taken.ack()
            assert await take(messages, 1) == []
        with pytest.raises(BrokerError):
            await broker.publish("jobs", b"z")
    finally:
        await broker.close()
    async with Broker.open(tmp_path) as broker:
        for name, body in (("jobs", b"x"), ("other", b"y")):
            again = await broker.get(name, no_ack=True)
            assert again is not None and again.body == body and again.redelivered


async def test_priority_order(tmp_path: Path) -> None:
    async with Broker.open(tmp_path) as broker:
        await broker.declare_queue("urgent", arguments={"x-max-priority": 9})
        for body, priority in ((b"low", 1), (b"none", None), (b"high", 9), (b"mid", 5)):
            await broker.publish("urgent", body, priority=priority)
        async with broker.consume("urgent", prefetch=1) as messages:
            got = []
            for _ in range(4):
                (message,) = await take(messages, 1)
                got.append((message.body, message.priority))
                await message.ack()
        assert got == [(b"high", 9), (b"mid", 5), (b"low", 1), (b"none", 0)]


async def test_get_and_no_ack(tmp_path: Path) -> None:
    async with Broker.open(tmp_path) as broker:
        await broker.declare_queue("jobs")
        assert await broker.get("jobs") is None
        for body in (b"1", b"2", b"3", b"4"):
            await broker.publish("jobs", body)
        kept = await broker.get("jobs")
        assert kept is not None and kept.body == b"1" and not kept.settled
        assert broker.queue("jobs").unacked_count == 1
        await kept.reject(requeue=True)
        again = await broker.get("jobs", no_ack=True)
        assert again is not None and (again.body, again.redelivered, again.settled) == (
            b"1",
            True,
            True,
        )
        with pytest.raises(PreconditionError):
            await again.ack()
        queue = broker.queue("jobs")
        assert (queue.unacked_count, queue.message_count) == (0, 3)
        async with broker.consume("jobs", no_ack=True, prefetch=1) as messages:
            (auto,) = await take(messages, 1)
            assert auto.body == b"2" and auto.settled
            await settle_loop()
            # the one yielded is gone; the next one waits in the inbox, still unsettled
            assert messages.unsettled == 1
        # leaving returns the buffered one: nothing handed to the application is lost
        assert (queue.message_count, queue.unacked_count) == (2, 0)
        rest = [await broker.get("jobs", no_ack=True) for _ in range(2)]
        assert [(m.body, m.redelivered) for m in rest if m is not None] == [
            (b"3", True),
            (b"4", False),
        ]


async def test_reject_to_dead_letter_exchange(tmp_path: Path) -> None:
    async with Broker.open(tmp_path) as broker:
        await broker.declare_exchange("dlx", "fanout")
        await broker.declare_queue("dead")
        await broker.bind_queue("dead", "dlx")
        await broker.declare_queue("work", arguments={"x-dead-letter-exchange": "dlx"})
        await broker.declare_exchange("events", "topic")
        await broker.bind_queue("work", "events", "order.*")
        result = await broker.publish("events", b"bad", routing_key="order.eu")
        assert result.routed and result.queues == ["work"]
        async with broker.consume("work") as messages:
            (message,) = await take(messages, 1)
            assert (message.exchange, message.routing_key) == ("events", "order.eu")
            await message.reject(requeue=False)
        dead = await broker.get("dead")
        assert dead is not None and dead.body == b"bad"
        (death,) = dead.headers["x-death"]
        assert (death["queue"], death["reason"], death["count"]) == ("work", "rejected", 1)
        assert dead.headers["x-first-death-exchange"] == "events"
        await dead.ack()


async def test_exclusive_and_queue_deletion_end_the_subscription(tmp_path: Path) -> None:
    async with Broker.open(tmp_path) as broker:
        await broker.declare_queue("solo")
        await broker.publish("solo", b"x")
        async with broker.consume("solo", exclusive=True, tag="only") as messages:
            assert messages.tag == "only"
            with pytest.raises(AccessRefusedError):
                async with broker.consume("solo"):
                    pass
            (message,) = await take(messages, 1)
            assert await broker.delete_queue("solo") == 0
            assert messages.ended
            assert await take(messages, 1) == []
            await message.ack()  # the queue is gone: nothing left to settle
        with pytest.raises(NotFoundError):
            broker.queue("solo")


async def test_declare_queue_rules(tmp_path: Path) -> None:
    async with Broker.open(tmp_path) as broker:
        queue = await broker.declare_queue("q", arguments={"x-max-priority": 3})
        assert queue.durable
        assert await broker.declare_queue("q", arguments={"x-max-priority": 3}) is queue
        with pytest.raises(PreconditionError):
            await broker.declare_queue("q", arguments={"x-max-priority": 4})
        with pytest.raises(NotFoundError):
            await broker.declare_queue("absent", passive=True)
        with pytest.raises(PreconditionError):
            async with broker.consume("q", prefetch=-1):
                pass
        with pytest.raises(NotFoundError):
            await broker.declare_queue("q", vhost="nope")
