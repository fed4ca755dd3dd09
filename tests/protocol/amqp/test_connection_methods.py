"""The connection class (channel 0) of the sans-I/O AMQP connection, against a real broker core.

The handshake and its refusals (password, guest from afar, tune limits, vhosts), methods out of
order, and Connection.Blocked/Unblocked on the resource alarm; frames go in as bytes and come
out decoded, through :class:`~wharf.testing.amqp_pair.AMQPPair`.
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
    CheckPassword,
    HandshakeComplete,
)
from wharf.protocol.amqp.frames import PROTOCOL_HEADER
from wharf.protocol.amqp.state import ConnState
from wharf.testing.amqp_pair import AMQPPair, content_frames


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    async with Broker.open(tmp_path / "data") as broker:
        yield broker


async def test_handshake_asks_for_a_password_check_and_reports_the_open(broker: Broker) -> None:
    pair = AMQPPair(broker)
    assert pair.feed(PROTOCOL_HEADER) == ()
    [(_, start)] = pair.received()
    assert isinstance(start, commands.Connection.Start)
    assert start.server_properties["product"] == "Wharf"
    actions = pair.send(
        0, commands.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest")
    )
    assert [type(a) for a in actions] == [CheckPassword]
    assert pair.received() == []  # nothing until the check is back
    assert isinstance(actions[0], CheckPassword) and actions[0].check() is True
    assert pair.conn.wait_done(True) == ()
    [(_, tune)] = pair.received()
    assert isinstance(tune, commands.Connection.Tune) and tune.heartbeat == 60
    assert pair.send(0, commands.Connection.TuneOk(frame_max=131072, heartbeat=30)) == ()
    assert pair.send(0, commands.Connection.Open(virtual_host="/")) == [HandshakeComplete(30)]
    [(_, open_ok)] = pair.received()
    assert isinstance(open_ok, commands.Connection.OpenOk)
    assert pair.conn.state is ConnState.OPEN


async def test_wrong_password_is_access_refused(broker: Broker) -> None:
    pair = AMQPPair(broker)
    pair.feed(PROTOCOL_HEADER)
    pair.received()
    await pair.carry_out(
        pair.send(0, commands.Connection.StartOk(mechanism="PLAIN", response="\0guest\0nope"))
    )
    [(_, close)] = pair.received()
    assert isinstance(close, commands.Connection.Close) and close.reply_code == 403
    assert pair.awaiting_close_ok and not pair.closed
    assert pair.send(0, commands.Connection.CloseOk()) == [CLOSE_TRANSPORT]
    assert pair.conn.close_reason == "authentication failed for user 'guest'"


async def test_guest_is_refused_from_a_remote_address(broker: Broker) -> None:
    pair = AMQPPair(broker, loopback=False)
    pair.feed(PROTOCOL_HEADER)
    pair.received()
    close = await pair.expect(
        0,
        commands.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest"),
        commands.Connection.Close,
    )
    assert close.reply_code == 403


@pytest.mark.parametrize(
    "frame_max,vhost,code", [(1024, "/", 530), (1 << 20, "/", 530), (131072, "nope", 530)]
)
async def test_tune_and_open_limits(broker: Broker, frame_max: int, vhost: str, code: int) -> None:
    pair = AMQPPair(broker)
    pair.feed(PROTOCOL_HEADER)
    pair.received()
    await pair.call(0, commands.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest"))
    pair.send(0, commands.Connection.TuneOk(channel_max=100, frame_max=frame_max))
    frames = await pair.call(0, commands.Connection.Open(virtual_host=vhost))
    close = frames[-1][1]
    assert isinstance(close, commands.Connection.Close) and close.reply_code == code


async def test_methods_out_of_order(broker: Broker) -> None:
    pair = AMQPPair(broker)
    pair.feed(PROTOCOL_HEADER)
    pair.received()
    assert pair.send(0, commands.Connection.Open(virtual_host="/")) == [AWAIT_CLOSE_OK]
    [(_, close)] = pair.received()
    assert isinstance(close, commands.Connection.Close) and close.reply_code == 503
    # Until Close-Ok, everything but Close/Close-Ok is discarded.
    assert await pair.call(1, commands.Channel.Open()) == []


async def test_a_resource_alarm_blocks_a_publisher_until_cleared(broker: Broker) -> None:
    pair = AMQPPair(broker)
    await pair.open(capabilities={"connection.blocked": True})
    await pair.expect(1, commands.Channel.Open(), commands.Channel.OpenOk)
    assert pair.conn.set_alarm("low on disk") == ()
    publish = commands.Basic.Publish(exchange="", routing_key="nowhere")
    assert pair.feed(content_frames(1, publish, b"x")) == [PAUSE_READING]
    [(_, blocked)] = pair.received()
    assert isinstance(blocked, commands.Connection.Blocked) and blocked.reason == "low on disk"
    assert pair.conn.set_alarm(None) == [RESUME_READING]
    [(_, unblocked)] = pair.received()
    assert isinstance(unblocked, commands.Connection.Unblocked)

async def test_a_connection_method_the_server_never_expects_is_unexpected_once_open(
    broker: Broker,
) -> None:
    pair = AMQPPair(broker)
    await pair.open()
    assert pair.send(0, commands.Connection.SecureOk(response="late")) == [AWAIT_CLOSE_OK]
    [(_, close)] = pair.received()
    assert isinstance(close, commands.Connection.Close) and close.reply_code == 505
    assert close.reply_text.startswith("UNEXPECTED_FRAME - Connection.SecureOk")


async def test_update_secret_answers_ok_once_open_and_is_unexpected_before(
    broker: Broker,
) -> None:
    pair = AMQPPair(broker)
    await pair.open()
    pair.send(0, commands.Connection.UpdateSecret(new_secret="fresh", reason="refresh"))
    [(_, ok)] = pair.received()
    assert isinstance(ok, commands.Connection.UpdateSecretOk)
    assert pair.conn.state is ConnState.OPEN

    early = AMQPPair(broker)
    early.feed(PROTOCOL_HEADER)
    early.received()
    assert early.send(0, commands.Connection.UpdateSecret(new_secret="x", reason="y")) == [
        AWAIT_CLOSE_OK
    ]
    [(_, close)] = early.received()
    assert isinstance(close, commands.Connection.Close) and close.reply_code == 505


async def alarmed_publisher(broker: Broker) -> tuple[AMQPPair, bytes, bytes]:
    """A connection with channel 1 open and the queue "alarmed" declared, the disk alarm on,
    and the frames of two messages to that queue."""
    pair = AMQPPair(broker)
    await pair.open(capabilities={"connection.blocked": True})
    await pair.expect(1, commands.Channel.Open(), commands.Channel.OpenOk)
    await pair.expect(1, commands.Queue.Declare(queue="alarmed"), commands.Queue.DeclareOk)
    assert pair.conn.set_alarm("low on disk") == ()
    publish = commands.Basic.Publish(exchange="", routing_key="alarmed")
    return pair, content_frames(1, publish, b"first"), content_frames(1, publish, b"second")


def method_frame_end(frames: bytes) -> int:
    """Where the first frame of ``frames`` (a message's publish method) ends."""
    return 8 + int.from_bytes(frames[3:7], "big")


async def test_a_message_being_read_when_its_publisher_is_blocked_is_read_whole(
    broker: Broker,
) -> None:
    pair, first, _ = await alarmed_publisher(broker)
    end = method_frame_end(first)  # the method frame alone, as a split read
    assert pair.feed(first[:end]) == ()  # blocked, and still reading: the message is not whole
    [(_, blocked)] = pair.received()
    assert isinstance(blocked, commands.Connection.Blocked)
    assert pair.feed(first[end:]) == [PAUSE_READING]
    assert broker.vhosts["/"].queues["alarmed"].message_count == 1


async def test_a_blocked_publisher_cannot_go_on_by_beginning_messages_before_the_last_ends(
    broker: Broker,
) -> None:
    pair, first, second = await alarmed_publisher(broker)
    assert pair.feed(first[:-1]) == ()  # the first message is not whole yet
    # its last byte, and the next message's publish method: that one waits for the alarm
    assert pair.feed(first[-1:] + second[: method_frame_end(second)]) == [PAUSE_READING]
    assert broker.vhosts["/"].queues["alarmed"].message_count == 1
