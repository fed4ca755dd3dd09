"""The consuming half of a channel, through a connection: deliveries, tags, prefetch."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pamqp import commands

from wharf.core.broker import Broker
from wharf.testing.amqp_pair import AMQPPair, Frame, content_frames


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[AMQPPair]:
    async with Broker.open(tmp_path / "data") as broker:
        pair = AMQPPair(broker)
        await pair.open()
        await pair.expect(1, commands.Channel.Open(), commands.Channel.OpenOk)
        await pair.call(1, commands.Queue.Declare(queue="q"))
        yield pair


def publish(pair: AMQPPair, *bodies: bytes) -> None:
    for payload in bodies:
        pair.feed(content_frames(1, commands.Basic.Publish(routing_key="q"), payload))


def delivered(frames: list[Frame]) -> list[tuple[int, bool]]:
    return [
        (f.delivery_tag, f.redelivered) for _, f in frames if isinstance(f, commands.Basic.Deliver)
    ]


async def test_deliveries_are_numbered_and_settled_by_tag(pair: AMQPPair) -> None:
    publish(pair, b"a", b"b", b"c")
    frames = await pair.call(1, commands.Basic.Consume(queue="q", consumer_tag="t"))
    assert isinstance(frames[0][1], commands.Basic.ConsumeOk)
    assert delivered(frames) == [(1, False), (2, False), (3, False)]
    consuming = pair.conn.channels[1].consuming
    assert sorted(consuming.unacked) == [1, 2, 3]
    assert await pair.call(1, commands.Basic.Ack(delivery_tag=2, multiple=True)) == []
    assert sorted(consuming.unacked) == [3]
    close = await pair.expect(1, commands.Basic.Ack(delivery_tag=9), commands.Channel.Close)
    assert (close.reply_code, close.class_id, close.method_id) == (406, 60, 80)


async def test_a_channel_prefetch_holds_deliveries_until_acked(pair: AMQPPair) -> None:
    await pair.expect(1, commands.Basic.Qos(prefetch_count=2, global_=True), commands.Basic.QosOk)
    publish(pair, b"a", b"b", b"c")
    frames = await pair.call(1, commands.Basic.Consume(queue="q", consumer_tag="t"))
    assert delivered(frames) == [(1, False), (2, False)]
    assert delivered(await pair.call(1, commands.Basic.Ack(delivery_tag=1))) == [(3, False)]


async def test_rejected_with_requeue_comes_back_redelivered(pair: AMQPPair) -> None:
    publish(pair, b"a")
    await pair.call(1, commands.Basic.Consume(queue="q", consumer_tag="t"))
    frames = await pair.call(1, commands.Basic.Reject(delivery_tag=1, requeue=True))
    assert delivered(frames) == [(2, True)]


async def test_basic_get_shares_the_tags_and_reports_empty(pair: AMQPPair) -> None:
    publish(pair, b"a")
    frames = await pair.call(1, commands.Basic.Get(queue="q"))
    assert isinstance(frames[0][1], commands.Basic.GetOk) and frames[0][1].delivery_tag == 1
    await pair.expect(1, commands.Basic.Get(queue="q"), commands.Basic.GetEmpty)
    assert list(pair.conn.channels[1].consuming.unacked) == [1]


async def test_no_deliveries_while_the_connection_cannot_write(pair: AMQPPair) -> None:
    await pair.call(1, commands.Basic.Consume(queue="q", consumer_tag="t"))
    pair.conn.set_writable(False)
    publish(pair, b"a")
    assert pair.received() == []
    pair.conn.set_writable(True)
    assert delivered(pair.received()) == [(1, False)]


async def test_closing_the_channel_requeues_what_is_unsettled(pair: AMQPPair) -> None:
    publish(pair, b"a")
    await pair.call(1, commands.Basic.Consume(queue="q", consumer_tag="t"))
    await pair.expect(
        1,
        commands.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0),
        commands.Channel.CloseOk,
    )
    await pair.expect(2, commands.Channel.Open(), commands.Channel.OpenOk)
    frames = await pair.call(2, commands.Basic.Get(queue="q", no_ack=True))
    assert isinstance(frames[0][1], commands.Basic.GetOk) and frames[0][1].redelivered


async def test_deleting_a_queue_one_consumes_from_answers_delete_ok_before_the_cancel(
    tmp_path: Path,
) -> None:
    # A client that waits for delete-ok (py-amqp, kombu) must get it before the broker's
    # basic.cancel of its own consumer, as RabbitMQ sends them.
    async with Broker.open(tmp_path / "data") as broker:
        pair = AMQPPair(broker)
        await pair.open(capabilities={"consumer_cancel_notify": True})
        await pair.expect(1, commands.Channel.Open(), commands.Channel.OpenOk)
        await pair.call(1, commands.Queue.Declare(queue="q"))
        await pair.call(1, commands.Basic.Consume(queue="q", consumer_tag="t"))
        frames = await pair.call(1, commands.Queue.Delete(queue="q"))
        assert [type(f) for _, f in frames] == [commands.Queue.DeleteOk, commands.Basic.Cancel]
        assert pair.conn.channels[1].consuming.consumers == {}
