"""Malformed and hostile input over real sockets; a healthy pika client stays unaffected."""

from __future__ import annotations

import logging
import socket
import struct
import time
from collections.abc import Iterator

import pika
import pytest
from amqp_inprocess import InProcessBroker
from amqp_wire import HEADER, handshake, read_frames, read_until, send_method
from pamqp import commands
from pamqp import frame as pamqp_frame

pytestmark = pytest.mark.interop

@pytest.fixture
def healthy(amqp_broker: InProcessBroker) -> Iterator[pika.BlockingConnection]:
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", amqp_broker.port))
    channel = conn.channel()
    channel.queue_declare("healthy")
    yield conn
    # The healthy client still works after every attack.
    channel.basic_publish("", "healthy", b"ok")
    assert channel.basic_get("healthy", auto_ack=True)[2] == b"ok"
    conn.close()


def close_code(frames: list[object]) -> int:
    closes = [f for f in frames if isinstance(f, commands.Connection.Close)]
    assert closes, frames
    return closes[0].reply_code


@pytest.mark.parametrize(
    "garbage", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"AMQP\x01\x01\x00\x0a", b"\x00" * 64]
)
def test_wrong_protocol_header_gets_ours(amqp_broker, healthy, garbage: bytes) -> None:
    with socket.create_connection(("127.0.0.1", amqp_broker.port)) as sock:
        sock.sendall(garbage)
        _, raw = read_frames(sock)
    assert raw == HEADER


def test_unfinished_protocol_header_times_out(amqp_broker, healthy) -> None:
    amqp_broker.listener.amqp_settings.handshake_timeout = 1.0
    with socket.create_connection(("127.0.0.1", amqp_broker.port)) as sock:
        sock.sendall(b"AMQP\x00")
        frames, raw = read_frames(sock, timeout=15)
    assert raw == b"" and frames == []


def test_oversized_frame_size_is_frame_error(amqp_broker, healthy) -> None:
    with handshake(amqp_broker.port) as sock:
        sock.sendall(struct.pack(">BHI", 1, 1, 0x7FFFFFFF))  # claims 2 GiB, never sent
        frames, _ = read_frames(sock)
    assert close_code(frames) == 501


def test_frame_over_negotiated_frame_max(amqp_broker, healthy) -> None:
    with handshake(amqp_broker.port) as sock:
        send_method(sock, 1, commands.Channel.Open())
        payload = b"x" * 5000  # over the 4096 negotiated above
        sock.sendall(struct.pack(">BHI", 3, 1, len(payload)) + payload + b"\xce")
        frames, _ = read_frames(sock)
    assert close_code(frames) == 501


def test_bad_frame_end_octet(amqp_broker, healthy) -> None:
    with handshake(amqp_broker.port) as sock:
        sock.sendall(pamqp_frame.marshal(commands.Channel.Open(), 1)[:-1] + b"\x00")
        frames, _ = read_frames(sock)
    assert close_code(frames) == 501


def test_unknown_class_and_method(amqp_broker, healthy) -> None:
    with handshake(amqp_broker.port) as sock:
        payload = struct.pack(">HH", 77, 7)
        sock.sendall(struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce")
        frames, _ = read_frames(sock)
    assert close_code(frames) == 540


def test_channel_above_channel_max(amqp_broker, healthy) -> None:
    with handshake(amqp_broker.port) as sock:
        send_method(sock, 11, commands.Channel.Open())  # channel_max negotiated as 10
        frames, _ = read_frames(sock)
    assert close_code(frames) == 504


def test_content_without_publish_is_unexpected_frame(amqp_broker, healthy) -> None:
    with handshake(amqp_broker.port) as sock:
        send_method(sock, 1, commands.Channel.Open())
        sock.sendall(struct.pack(">BHI", 3, 1, 3) + b"abc\xce")
        frames, _ = read_frames(sock)
    assert close_code(frames) == 505


def test_method_on_closed_channel_is_channel_error(amqp_broker, healthy) -> None:
    with handshake(amqp_broker.port) as sock:
        send_method(sock, 3, commands.Queue.Declare(queue="x"))
        frames, _ = read_frames(sock)
    assert close_code(frames) == 504


def test_truncated_arguments_are_syntax_error(amqp_broker, healthy) -> None:
    with handshake(amqp_broker.port) as sock:
        send_method(sock, 1, commands.Channel.Open())
        payload = b"\x00\x32\x00\x0a\x00\x00\x40short"  # queue.declare, name length 64, 5 bytes
        sock.sendall(struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce")
        frames, _ = read_frames(sock)
    assert close_code(frames) == 502


def test_random_garbage_after_handshake(amqp_broker, healthy) -> None:
    with handshake(amqp_broker.port) as sock:
        sock.sendall(bytes((i * 37 + 11) % 256 for i in range(100_000)))
        frames, _ = read_frames(sock)
    assert close_code(frames) in (501, 502, 504, 505, 540)


def test_missed_heartbeats_close_the_connection(amqp_broker, healthy, caplog) -> None:
    with handshake(amqp_broker.port, heartbeat=1) as sock:
        # Say nothing: after two silent intervals the broker drops the socket.
        started = time.monotonic()
        frames, _ = read_frames(sock, timeout=20)
        assert time.monotonic() - started < 20
    assert frames  # the broker's own heartbeats arrived first
    assert all(not isinstance(f, commands.Connection.OpenOk) for f in frames)
    # The close is logged as a warning with the reason.
    deadline = time.monotonic() + 20
    while not [
        record
        for record in caplog.records
        if record.name == "wharf.connections"
        and record.levelno == logging.WARNING
        and "missed heartbeats from client" in record.getMessage()
    ]:
        assert time.monotonic() < deadline, [r.getMessage() for r in caplog.records]
        time.sleep(0.05)


def test_publish_immediate_is_not_implemented(amqp_broker, healthy) -> None:
    with handshake(amqp_broker.port) as sock:
        send_method(sock, 1, commands.Channel.Open())
        send_method(sock, 1, commands.Basic.Publish(routing_key="q", immediate=True))
        frames, _ = read_frames(sock)
    assert close_code(frames) == 540


def test_oversized_body_closes_only_the_channel(amqp_broker, healthy) -> None:
    with handshake(amqp_broker.port) as sock:
        send_method(sock, 1, commands.Channel.Open())
        send_method(sock, 1, commands.Basic.Publish(routing_key="q"))
        # A content header announcing 1 TiB: refused at once, nothing allocated for it.
        header = struct.pack(">HHQ", 60, 0, 1 << 40) + b"\x00\x00"
        sock.sendall(struct.pack(">BHI", 2, 1, len(header)) + header + b"\xce")
        frames = read_until(sock, commands.Channel.Close)
        assert frames[-1].reply_code == 406
        send_method(sock, 1, commands.Channel.CloseOk())
        send_method(sock, 2, commands.Channel.Open())
        assert read_until(sock, commands.Channel.OpenOk)


def test_consumer_that_stops_reading_holds_deliveries_back(amqp_broker, healthy) -> None:
    sock = handshake(amqp_broker.port)
    try:
        send_method(sock, 1, commands.Channel.Open())
        send_method(sock, 1, commands.Queue.Declare(queue="unread"))
        read_until(sock, commands.Queue.DeclareOk)
        send_method(sock, 1, commands.Basic.Consume(queue="unread", no_ack=True))
        read_until(sock, commands.Basic.ConsumeOk)
        # From now on the raw client reads nothing.
        channel = healthy.channel()
        body = b"x" * 1024
        for _ in range(30_000):
            channel.basic_publish("", "unread", body)
        left = channel.queue_declare("unread", passive=True).method.message_count
        # 30 MB published; the socket buffers and the 4 MiB write limit hold far less, so
        # most messages must still be waiting in the queue rather than in memory buffers.
        assert left > 5_000
    finally:
        sock.close()
