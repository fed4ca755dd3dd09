"""The publishing half of a channel, through a connection: returns, transactions, refusals."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pamqp import body, commands, header

from wharf.core.broker import Broker
from wharf.protocol.amqp.frames import FrameWriter
from wharf.testing.amqp_pair import AMQPPair, content_frames


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[AMQPPair]:
    async with Broker.open(tmp_path / "data") as broker:
        pair = AMQPPair(broker)
        await pair.open()
        await pair.expect(1, commands.Channel.Open(), commands.Channel.OpenOk)
        yield pair


async def test_an_unroutable_mandatory_message_is_returned(pair: AMQPPair) -> None:
    props = commands.Basic.Properties(content_type="text/plain")
    publish = commands.Basic.Publish(exchange="", routing_key="nowhere", mandatory=True)
    assert pair.feed(content_frames(1, publish, b"lost", props)) == ()
    [(_, returned), (_, head), (_, content)] = pair.received()
    assert isinstance(returned, commands.Basic.Return)
    assert (returned.reply_code, returned.reply_text, returned.routing_key) == (
        312,
        "NO_ROUTE",
        "nowhere",
    )
    assert isinstance(head, header.ContentHeader) and head.properties.content_type == "text/plain"
    assert isinstance(content, body.ContentBody) and content.value == b"lost"


async def test_a_message_cut_into_frames_is_assembled(pair: AMQPPair) -> None:
    await pair.call(1, commands.Queue.Declare(queue="q"))
    payload = bytes(range(256)) * 1000
    data = content_frames(1, commands.Basic.Publish(routing_key="q"), payload, frame_max=4096)
    for i in range(0, len(data), 3000):  # never a whole message in one read
        assert pair.feed(data[i : i + 3000]) == ()
    frames = await pair.call(1, commands.Basic.Get(queue="q", no_ack=True))
    assert isinstance(frames[0][1], commands.Basic.GetOk)
    assert b"".join(f.value for _, f in frames[2:]) == payload


async def test_immediate_is_not_implemented(pair: AMQPPair) -> None:
    publish = commands.Basic.Publish(routing_key="q", immediate=True)
    pair.feed(content_frames(1, publish, b"x"))
    [(_, close)] = pair.received()
    assert isinstance(close, commands.Connection.Close)
    assert (close.reply_code, close.class_id, close.method_id) == (540, 60, 40)


async def test_a_method_inside_a_message_is_an_unexpected_frame(pair: AMQPPair) -> None:
    publish = FrameWriter.method(1, commands.Basic.Publish(routing_key="q"))
    pair.feed(publish + FrameWriter.method(1, commands.Basic.Qos(prefetch_count=1)))
    [(_, close)] = pair.received()
    assert isinstance(close, commands.Connection.Close) and close.reply_code == 505


async def test_transactional_publishes_wait_for_commit(pair: AMQPPair) -> None:
    await pair.call(1, commands.Queue.Declare(queue="q"))
    await pair.expect(1, commands.Tx.Select(), commands.Tx.SelectOk)
    pair.feed(content_frames(1, commands.Basic.Publish(routing_key="q"), b"later"))
    await pair.expect(1, commands.Basic.Get(queue="q"), commands.Basic.GetEmpty)
    await pair.expect(1, commands.Tx.Commit(), commands.Tx.CommitOk)
    frames = await pair.call(1, commands.Basic.Get(queue="q", no_ack=True))
    assert isinstance(frames[0][1], commands.Basic.GetOk) and frames[2][1].value == b"later"


async def test_a_missing_exchange_refuses_the_publish_at_once(pair: AMQPPair) -> None:
    pair.feed(content_frames(1, commands.Basic.Publish(exchange="nope", routing_key="q"), b"x"))
    [(_, close)] = pair.received()
    assert isinstance(close, commands.Channel.Close)
    assert (close.reply_code, close.class_id, close.method_id) == (404, 60, 40)
