"""Direct reply-to and x-delivery-count through sans-I/O connections on one broker core.

A requester and a responder are two :class:`~wharf.testing.amqp_pair.AMQPPair` connections:
the requester consumes ``amq.rabbitmq.reply-to``, publishes a request naming it in
``reply-to``, the responder takes the request and publishes the reply to the address it finds
there. The refusals follow RabbitMQ's (406 on the channel, 312 returns for dead addresses).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pamqp import body, commands, header
from pamqp import frame as pamqp_frame

from wharf.core.broker import Broker
from wharf.protocol.amqp.frames import PROTOCOL_HEADER
from wharf.testing.amqp_pair import AMQPPair, Frame, content_frames

REPLY = "amq.rabbitmq.reply-to"


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    async with Broker.open(tmp_path / "data") as broker:
        yield broker


async def opened(broker: Broker) -> AMQPPair:
    pair = AMQPPair(broker)
    await pair.open()
    await pair.expect(1, commands.Channel.Open(), commands.Channel.OpenOk)
    return pair


@pytest.fixture
async def requester(broker: Broker) -> AMQPPair:
    pair = await opened(broker)
    await pair.call(1, commands.Queue.Declare(queue="requests"))
    return pair


@pytest.fixture
async def responder(broker: Broker) -> AMQPPair:
    return await opened(broker)


async def consume_replies(pair: AMQPPair, channel: int = 1, tag: str = "replies") -> None:
    consume = commands.Basic.Consume(queue=REPLY, consumer_tag=tag, no_ack=True)
    ok = await pair.expect(channel, consume, commands.Basic.ConsumeOk)
    assert ok.consumer_tag == tag


def publish(
    pair: AMQPPair, routing_key: str, payload: bytes, *, mandatory: bool = False, **props: Any
) -> None:
    method = commands.Basic.Publish(routing_key=routing_key, mandatory=mandatory)
    pair.feed(content_frames(1, method, payload, commands.Basic.Properties(**props)))


async def reply_address(requester: AMQPPair, responder: AMQPPair) -> str:
    """Send a request naming the pseudo-queue; the reply-to the responder reads."""
    publish(requester, "requests", b"ping", reply_to=REPLY, correlation_id="c1")
    frames = await responder.call(1, commands.Basic.Get(queue="requests", no_ack=True))
    [(_, got), (_, head), (_, content)] = frames
    assert isinstance(got, commands.Basic.GetOk) and content.value == b"ping"
    assert head.properties.correlation_id == "c1"
    address: str = head.properties.reply_to
    return address


def single_close(frames: list[Frame]) -> commands.Channel.Close:
    [(_, close)] = frames
    assert isinstance(close, commands.Channel.Close), frames
    return close


async def test_connection_start_announces_direct_reply_to(broker: Broker) -> None:
    pair = AMQPPair(broker)
    pair.feed(PROTOCOL_HEADER)
    [(_, start)] = pair.received()
    assert start.server_properties["capabilities"]["direct_reply_to"] is True


async def test_a_reply_reaches_the_requester_without_a_queue(
    broker: Broker, requester: AMQPPair, responder: AMQPPair
) -> None:
    await consume_replies(requester)
    address = await reply_address(requester, responder)
    assert address.startswith(REPLY + ".") and len(address) > len(REPLY) + 16
    queues_before = set(broker.vhosts["/"].queues)
    publish(responder, address, b"pong", correlation_id="c1")
    assert responder.received() == []
    [(_, deliver), (_, head), (_, content)] = requester.received()
    assert isinstance(deliver, commands.Basic.Deliver)
    assert (deliver.consumer_tag, deliver.exchange, deliver.routing_key) == (
        "replies", "", address,
    )  # fmt: skip
    assert deliver.redelivered is False
    assert isinstance(head, header.ContentHeader) and head.properties.correlation_id == "c1"
    assert isinstance(content, body.ContentBody) and content.value == b"pong"
    assert set(broker.vhosts["/"].queues) == queues_before  # nothing was declared
    # no-ack: nothing to settle, and a second reply gets the next delivery tag
    assert requester.conn.channels[1].consuming.unacked == {}
    publish(responder, address, b"pong 2")
    [(_, again), _, _] = requester.received()
    assert again.delivery_tag == deliver.delivery_tag + 1


async def test_every_channel_gets_its_own_address(
    requester: AMQPPair, responder: AMQPPair
) -> None:
    await consume_replies(requester)
    first = await reply_address(requester, responder)
    assert await reply_address(requester, responder) == first  # stable while consuming
    await requester.expect(2, commands.Channel.Open(), commands.Channel.OpenOk)
    await consume_replies(requester, channel=2)
    requester.feed(
        content_frames(
            2,
            commands.Basic.Publish(routing_key="requests"),
            b"ping",
            commands.Basic.Properties(reply_to=REPLY),
        )
    )
    [_, (_, head), _] = await responder.call(1, commands.Basic.Get(queue="requests", no_ack=True))
    assert head.properties.reply_to not in (first, REPLY)
    publish(responder, head.properties.reply_to, b"to channel 2")
    [(channel, deliver), _, _] = requester.received()
    assert channel == 2 and isinstance(deliver, commands.Basic.Deliver)


async def test_a_reply_consumer_must_not_acknowledge(requester: AMQPPair) -> None:
    frames = await requester.call(1, commands.Basic.Consume(queue=REPLY, no_ack=False))
    close = single_close(frames)
    assert (close.reply_code, close.class_id, close.method_id) == (406, 60, 20)
    assert "reply consumer cannot acknowledge" in close.reply_text


async def test_a_channel_has_one_reply_consumer(requester: AMQPPair) -> None:
    await consume_replies(requester)
    close = single_close(
        await requester.call(1, commands.Basic.Consume(queue=REPLY, consumer_tag="x", no_ack=True))
    )
    assert (close.reply_code, close.method_id) == (406, 20)
    assert "reply consumer already set" in close.reply_text


async def test_the_reply_consumers_tag_cannot_be_reused(requester: AMQPPair) -> None:
    await consume_replies(requester, tag="t")
    frames = await requester.call(1, commands.Basic.Consume(queue="requests", consumer_tag="t"))
    [(_, close)] = frames
    assert isinstance(close, commands.Connection.Close) and close.reply_code == 530


async def test_naming_the_pseudo_queue_without_consuming_it_is_refused(
    requester: AMQPPair,
) -> None:
    publish(requester, "requests", b"ping", reply_to=REPLY)
    close = single_close(requester.received())
    assert (close.reply_code, close.class_id, close.method_id) == (406, 60, 40)
    assert "fast reply consumer does not exist" in close.reply_text


async def test_other_reply_to_values_pass_through_unchanged(
    requester: AMQPPair, responder: AMQPPair
) -> None:
    for reply_to in ("my-replies", REPLY + "-lookalike"):
        publish(requester, "requests", b"ping", reply_to=reply_to, content_type="text/plain")
        frames = await responder.call(1, commands.Basic.Get(queue="requests", no_ack=True))
        head = frames[1][1].properties
        assert (head.reply_to, head.content_type) == (reply_to, "text/plain")


async def test_a_reply_after_the_consumer_is_cancelled_is_returned(
    requester: AMQPPair, responder: AMQPPair
) -> None:
    await consume_replies(requester)
    address = await reply_address(requester, responder)
    cancel = commands.Basic.Cancel(consumer_tag="replies")
    await requester.expect(1, cancel, commands.Basic.CancelOk)
    publish(responder, address, b"late", mandatory=True)
    [(_, returned), _, (_, content)] = responder.received()
    assert isinstance(returned, commands.Basic.Return)
    assert (returned.reply_code, returned.routing_key, content.value) == (312, address, b"late")
    assert requester.received() == []
    # consuming again gives a new address; the old one stays dead
    await consume_replies(requester, tag="again")
    assert await reply_address(requester, responder) != address


async def test_a_reply_to_a_closed_channel_is_returned(
    broker: Broker, requester: AMQPPair, responder: AMQPPair
) -> None:
    await consume_replies(requester)
    address = await reply_address(requester, responder)
    close = commands.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0)
    await requester.expect(1, close, commands.Channel.CloseOk)
    assert len(broker.vhosts["/"].router.replies) == 0
    publish(responder, address, b"late", mandatory=True)
    [(_, returned), _, _] = responder.received()
    assert isinstance(returned, commands.Basic.Return) and returned.reply_code == 312
    publish(responder, REPLY + ".made-up-token", b"guess", mandatory=True)
    [(_, returned), _, _] = responder.received()
    assert isinstance(returned, commands.Basic.Return) and returned.reply_code == 312


async def test_declaring_the_pseudo_queue_answers_declare_ok(
    requester: AMQPPair, responder: AMQPPair
) -> None:
    for passive in (True, False):
        ok = await requester.expect(
            1, commands.Queue.Declare(queue=REPLY, passive=passive), commands.Queue.DeclareOk
        )
        assert (ok.queue, ok.message_count, ok.consumer_count) == (REPLY, 0, 1)
    await consume_replies(requester)
    address = await reply_address(requester, responder)
    declare = commands.Queue.Declare(queue=address, passive=True)
    ok = await responder.expect(1, declare, commands.Queue.DeclareOk)
    assert ok.queue == address


async def test_declaring_an_unknown_reply_address_is_not_found(requester: AMQPPair) -> None:
    declare = commands.Queue.Declare(queue=REPLY + ".no-such-token", passive=True)
    close = single_close(await requester.call(1, declare))
    assert (close.reply_code, close.class_id, close.method_id) == (404, 50, 10)


# -- x-delivery-count --------------------------------------------------------------------------


def delivery_headers(frames: list[Frame]) -> list[tuple[bool, dict[str, Any] | None]]:
    """(redelivered, headers) of each Basic.Deliver or Get-Ok in ``frames``."""
    out: list[tuple[bool, dict[str, Any] | None]] = []
    for i, (_, frame) in enumerate(frames):
        if isinstance(frame, commands.Basic.Deliver | commands.Basic.GetOk):
            out.append((frame.redelivered, frames[i + 1][1].properties.headers))
    return out


async def test_quorum_redeliveries_carry_x_delivery_count(requester: AMQPPair) -> None:
    declare = commands.Queue.Declare(
        queue="qq", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await requester.call(1, declare)
    publish(requester, "qq", b"work", headers={"app": "kept"})
    frames = await requester.call(1, commands.Basic.Consume(queue="qq", consumer_tag="w"))
    assert delivery_headers(frames) == [(False, {"app": "kept"})]
    frames = await requester.call(1, commands.Basic.Reject(delivery_tag=1, requeue=True))
    assert delivery_headers(frames) == [(True, {"app": "kept", "x-delivery-count": 1})]
    frames = await requester.call(1, commands.Basic.Nack(delivery_tag=2, requeue=True))
    assert delivery_headers(frames) == [(True, {"app": "kept", "x-delivery-count": 2})]
    await requester.call(1, commands.Basic.Cancel(consumer_tag="w"))
    await requester.call(1, commands.Basic.Reject(delivery_tag=3, requeue=True))
    frames = await requester.call(1, commands.Basic.Get(queue="qq", no_ack=True))
    assert delivery_headers(frames) == [(True, {"app": "kept", "x-delivery-count": 3})]


async def test_classic_redeliveries_have_no_x_delivery_count(requester: AMQPPair) -> None:
    publish(requester, "requests", b"work")
    await requester.call(1, commands.Basic.Consume(queue="requests", consumer_tag="w"))
    frames = await requester.call(1, commands.Basic.Reject(delivery_tag=1, requeue=True))
    assert delivery_headers(frames) == [(True, None)]


async def test_a_quorum_redelivery_with_unreadable_headers_goes_out_as_published(
    requester: AMQPPair,
) -> None:
    declare = commands.Queue.Declare(
        queue="qq", durable=True, arguments={"x-queue-type": "quorum"}
    )
    await requester.call(1, declare)
    table = b"\x00\x00\x00\x03\x01a?"  # one entry of an unknown field type
    raw_props = b"\x20\x00" + table  # the headers flag only
    method = commands.Basic.Publish(routing_key="qq")
    frame_header = (
        b"\x02\x00\x01" + (12 + len(raw_props)).to_bytes(4, "big")
        + b"\x00\x3c\x00\x00" + (4).to_bytes(8, "big") + raw_props + b"\xce"
    )  # fmt: skip
    requester.feed(
        pamqp_frame.marshal(method, 1)
        + frame_header
        + pamqp_frame.marshal(body.ContentBody(b"work"), 1)
    )
    requester.send(1, commands.Basic.Consume(queue="qq", consumer_tag="w"))
    first = requester.conn.data_to_send()  # raw: pamqp cannot decode these headers either
    requester.send(1, commands.Basic.Reject(delivery_tag=1, requeue=True))
    again = requester.conn.data_to_send()
    assert raw_props in first and raw_props in again and b"x-delivery-count" not in again
    _, _, deliver = pamqp_frame.unmarshal(again)
    assert isinstance(deliver, commands.Basic.Deliver) and deliver.redelivered
