"""The sans-I/O AMQP connection against a real broker core: bytes in, bytes and actions out.

Frames go in as bytes (marshalled by pamqp, as a client would send them) and come out as bytes
decoded by pamqp; the actions the connection returns are looked at directly, and carried out by
:class:`~wharf.testing.amqp_pair.AMQPPair` where they lead to more input.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pamqp import commands

from wharf.core.broker import Broker
from wharf.protocol.amqp.actions import (
    AWAIT_CLOSE_OK,
    CLOSE_TRANSPORT,
    PAUSE_READING,
    RESUME_READING,
    AwaitCore,
    RunInBackground,
)
from wharf.protocol.amqp.connection import AMQPConnection
from wharf.protocol.amqp.errors import ReplyCode
from wharf.protocol.amqp.frames import PROTOCOL_HEADER, FrameWriter
from wharf.testing.amqp_pair import AMQPPair, content_frames


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    async with Broker.open(tmp_path / "data") as broker:
        yield broker


def _close(code: int = 200, text: str = "") -> commands.Connection.Close:
    return commands.Connection.Close(reply_code=code, reply_text=text, class_id=0, method_id=0)


async def test_channel_and_close_both_ways(broker: Broker) -> None:
    pair = AMQPPair(broker)
    await pair.open()
    await pair.expect(1, commands.Channel.Open(), commands.Channel.OpenOk)
    await pair.expect(
        1,
        commands.Channel.Close(reply_code=200, reply_text="", class_id=0, method_id=0),
        commands.Channel.CloseOk,
    )
    assert pair.send(0, _close(text="bye")) == [CLOSE_TRANSPORT]
    [(_, close_ok)] = pair.received()
    assert isinstance(close_ok, commands.Connection.CloseOk)
    assert pair.conn.closed and pair.conn.client_closed
    assert pair.conn.close_reason == "client closed: 200 bye"


async def test_a_bad_protocol_header_is_answered_with_ours(broker: Broker) -> None:
    conn = AMQPConnection(broker, peer="memory", is_loopback=True)
    assert conn.receive_data(b"HTTP/1.1") == [CLOSE_TRANSPORT]
    assert conn.data_to_send() == PROTOCOL_HEADER
    assert conn.closed and conn.close_reason is not None


async def test_channel_errors_keep_the_connection(broker: Broker) -> None:
    pair = AMQPPair(broker)
    await pair.open()
    await pair.expect(1, commands.Channel.Open(), commands.Channel.OpenOk)
    close = await pair.expect(
        1, commands.Queue.Declare(queue="missing", passive=True), commands.Channel.Close
    )
    assert (close.reply_code, close.class_id, close.method_id) == (404, 50, 10)
    assert pair.send(1, commands.Queue.Declare(queue="ignored")) == ()  # until Close-Ok
    assert pair.received() == []
    pair.send(1, commands.Channel.CloseOk())
    await pair.expect(1, commands.Channel.Open(), commands.Channel.OpenOk)
    close = await pair.expect(1, commands.Channel.Open(), commands.Connection.Close)
    assert close.reply_code == 504  # twice: a connection error


async def test_channel_flow_stops_and_resumes(broker: Broker) -> None:
    pair = AMQPPair(broker)
    await pair.open()
    await pair.expect(1, commands.Channel.Open(), commands.Channel.OpenOk)
    flow_ok = await pair.expect(1, commands.Channel.Flow(active=False), commands.Channel.FlowOk)
    assert flow_ok.active is False
    assert pair.conn.channels[1].consuming.active is False
    flow_ok = await pair.expect(1, commands.Channel.Flow(active=True), commands.Channel.FlowOk)
    assert flow_ok.active is True


async def test_frames_after_a_core_wait_are_held_until_it_is_done(broker: Broker) -> None:
    pair = AMQPPair(broker)
    await pair.open()
    await pair.expect(1, commands.Channel.Open(), commands.Channel.OpenOk)
    publish = commands.Basic.Publish(exchange="", routing_key="q")
    actions = pair.feed(
        b"".join(
            [
                FrameWriter.method(1, commands.Queue.Declare(queue="q")),
                content_frames(1, publish, b"hello"),
                FrameWriter.method(1, commands.Basic.Get(queue="q", no_ack=True)),
            ]
        )
    )
    assert [type(a) for a in actions] == [AwaitCore]
    assert pair.received() == []
    await pair.carry_out(actions)
    kinds = [type(frame) for _, frame in pair.received()]
    assert kinds[:2] == [commands.Queue.DeclareOk, commands.Basic.GetOk]
    # Start-Ok, Tune-Ok, Open, then Channel.Open, Queue.Declare, Basic.Publish, Basic.Get
    assert pair.conn.requests == 7


async def test_core_refusals_after_a_wait_close_the_channel_with_the_method_ids(
    broker: Broker,
) -> None:
    pair = AMQPPair(broker)
    await pair.open()
    await pair.expect(1, commands.Channel.Open(), commands.Channel.OpenOk)
    await pair.call(1, commands.Queue.Declare(queue="q"))
    close = await pair.expect(
        1, commands.Queue.Declare(queue="q", durable=True), commands.Channel.Close
    )
    assert (close.reply_code, close.class_id, close.method_id) == (406, 50, 10)


async def test_an_unexpected_failure_of_a_wait_closes_the_connection(broker: Broker) -> None:
    pair = AMQPPair(broker)
    await pair.open()
    await pair.expect(1, commands.Channel.Open(), commands.Channel.OpenOk)
    [action] = pair.send(1, commands.Queue.Declare(queue="q"))
    assert isinstance(action, AwaitCore)
    action.awaitable.close()  # the adapter's await went wrong
    assert pair.conn.wait_failed(RuntimeError("boom")) == [AWAIT_CLOSE_OK, CLOSE_TRANSPORT]
    [(_, close)] = pair.received()
    assert isinstance(close, commands.Connection.Close) and close.reply_code == 541


async def test_reading_pauses_while_input_piles_up_behind_a_wait(broker: Broker) -> None:
    pair = AMQPPair(broker)
    await pair.open(frame_max=4096)
    await pair.expect(1, commands.Channel.Open(), commands.Channel.OpenOk)
    [wait] = pair.send(1, commands.Queue.Declare(queue="q"))
    heartbeats = FrameWriter.heartbeat() * 2100  # more than four frames of 4096 bytes
    assert pair.feed(heartbeats) == [PAUSE_READING]
    more = pair.conn.wait_done(await wait.awaitable)  # type: ignore[union-attr]
    assert more == [RESUME_READING]


async def test_a_server_close_waits_for_close_ok(broker: Broker) -> None:
    pair = AMQPPair(broker)
    await pair.open()
    actions = pair.conn.close_from_server(ReplyCode.CONNECTION_FORCED, "broker shutdown")
    assert actions == [AWAIT_CLOSE_OK]
    [(_, close)] = pair.received()
    assert isinstance(close, commands.Connection.Close) and close.reply_code == 320
    assert pair.send(0, commands.Connection.CloseOk()) == [CLOSE_TRANSPORT]
    assert pair.conn.close_reason == "CONNECTION_FORCED - broker shutdown"


async def test_heartbeats_are_bytes_on_demand(broker: Broker) -> None:
    pair = AMQPPair(broker)
    await pair.open(heartbeat=10)
    assert pair.heartbeat_s == 10
    wakeups = pair.wakeups
    pair.conn.heartbeat_due()
    assert pair.wakeups == wakeups + 1
    assert pair.conn.data_to_send() == FrameWriter.heartbeat()


async def test_exclusive_queues_are_deleted_when_the_connection_is_lost(broker: Broker) -> None:
    pair = AMQPPair(broker)
    await pair.open()
    await pair.expect(1, commands.Channel.Open(), commands.Channel.OpenOk)
    await pair.call(1, commands.Queue.Declare(queue="mine", exclusive=True))
    assert "mine" in broker.vhosts["/"].queues
    [release] = pair.conn.connection_lost()
    assert isinstance(release, RunInBackground)
    await release.awaitable
    assert "mine" not in broker.vhosts["/"].queues
    assert pair.conn.connection_lost() == ()  # once only
