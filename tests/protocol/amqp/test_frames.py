"""The AMQP frame reader and writer, driven with real frame bytes.

Every decoder is fed whole, one byte at a time, and with trailing bytes (the next frame's
start), in the manner of h11's tests.
"""

from __future__ import annotations

import struct

import pytest
from pamqp import commands
from pamqp import frame as pamqp_frame
from pamqp import header as pamqp_header
from pamqp import heartbeat as pamqp_heartbeat
from pamqp.body import ContentBody

from wharf.protocol.amqp.errors import AMQPConnectionError, BadProtocolHeader, ReplyCode
from wharf.protocol.amqp.frames import (
    NEED_DATA,
    PROTOCOL_HEADER,
    ContentBodyFrame,
    ContentHeaderFrame,
    Event,
    FrameReader,
    FrameWriter,
    HeartbeatFrame,
    MethodFrame,
    ProtocolHeaderReceived,
    PublishFrame,
)

# Connection.Start-Ok written out by hand (pamqp marshals it to the same bytes): method 10.11,
# table {"product": "pika"}, mechanism PLAIN, response "\0guest\0guest", locale en_US.
PIKA_START_OK = (
    b"\x01\x00\x00\x00\x00\x00\x35"
    b"\x00\x0a\x00\x0b"
    b"\x00\x00\x00\x11\x07productS\x00\x00\x00\x04pika"
    b"\x05PLAIN"
    b"\x00\x00\x00\x0c\x00guest\x00guest"
    b"\x05en_US"
    b"\xce"
)


def read_all(reader: FrameReader, data: bytes, *, step: int | None = None) -> list[Event]:
    """Feed ``data`` (all at once or ``step`` bytes at a time) and collect every event."""
    events: list[Event] = []
    chunks = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for chunk in chunks:
        reader.receive_data(chunk)
        while True:
            event = reader.next_event()
            if event is NEED_DATA:
                break
            assert not isinstance(event, type(NEED_DATA))
            events.append(event)
    return events


def opened_reader(frame_max: int = 131072) -> FrameReader:
    reader = FrameReader(frame_max=frame_max)
    reader.receive_data(PROTOCOL_HEADER)
    assert isinstance(reader.next_event(), ProtocolHeaderReceived)
    return reader


def rejected(data: bytes, frame_max: int = 131072) -> AMQPConnectionError:
    """The error an opened reader raises for ``data``."""
    reader = opened_reader(frame_max)
    reader.receive_data(data)
    with pytest.raises(AMQPConnectionError) as info:
        reader.next_event()
    return info.value


def publish_message_bytes(body: bytes, frame_max: int = 131072) -> bytes:
    props = commands.Basic.Properties(
        content_type="text/plain", delivery_mode=2, headers={"k": "v"}, priority=3
    )
    out = pamqp_frame.marshal(commands.Basic.Publish(exchange="ex", routing_key="rk.1"), 1)
    out += pamqp_frame.marshal(pamqp_header.ContentHeader(0, len(body), props), 1)
    chunk = frame_max - 8
    for i in range(0, len(body), chunk):
        out += pamqp_frame.marshal(ContentBody(body[i : i + chunk]), 1)
    return out


@pytest.mark.parametrize("step", [None, 1, 3])
def test_protocol_header_then_start_ok(step: int | None) -> None:
    events = read_all(FrameReader(), PROTOCOL_HEADER + PIKA_START_OK, step=step)
    assert isinstance(events[0], ProtocolHeaderReceived)
    assert isinstance(events[1], MethodFrame)
    method = events[1].method
    assert isinstance(method, commands.Connection.StartOk)
    assert method.client_properties == {"product": "pika"}
    assert method.mechanism == "PLAIN"
    assert method.response == "\x00guest\x00guest"
    assert len(events) == 2


def test_partial_protocol_header_needs_data() -> None:
    reader = FrameReader()
    reader.receive_data(b"AMQP\x00")
    assert reader.next_event() is NEED_DATA


@pytest.mark.parametrize(
    "data", [b"GET / HTTP/1.1\r\n", b"AMQP\x01\x01\x00\x0a", b"AMQP\x00\x00\x09\x00", b"\x16"]
)
def test_wrong_protocol_header_raises(data: bytes) -> None:
    reader = FrameReader()
    reader.receive_data(data)
    with pytest.raises(BadProtocolHeader) as info:
        reader.next_event()
    assert info.value.reply_code == ReplyCode.FRAME_ERROR


@pytest.mark.parametrize("step", [None, 1, 7])
def test_publish_header_and_body(step: int | None) -> None:
    body = bytes(range(256)) * 40  # 10240 bytes, split at frame_max 4096 into three frames
    data = publish_message_bytes(body, frame_max=4096)
    events = read_all(opened_reader(4096), data, step=step)
    publish, header, *bodies = events
    assert publish == PublishFrame(1, "ex", "rk.1", mandatory=False, immediate=False)
    assert isinstance(header, ContentHeaderFrame)
    assert header.class_id == 60 and header.body_size == len(body)
    expected_props = pamqp_header.ContentHeader(
        0,
        0,
        commands.Basic.Properties(
            content_type="text/plain", delivery_mode=2, headers={"k": "v"}, priority=3
        ),
    ).marshal()[12:]
    assert header.properties == expected_props
    assert [len(b.payload) for b in bodies if isinstance(b, ContentBodyFrame)] == [4088, 4088, 2064]
    assert b"".join(b.payload for b in bodies if isinstance(b, ContentBodyFrame)) == body


def test_publish_flags_decoded() -> None:
    data = pamqp_frame.marshal(
        commands.Basic.Publish(exchange="", routing_key="q", mandatory=True, immediate=True), 5
    )
    (event,) = read_all(opened_reader(), data)
    assert event == PublishFrame(5, "", "q", mandatory=True, immediate=True)


def test_trailing_bytes_stay_buffered() -> None:
    frame = pamqp_frame.marshal(commands.Channel.Open(), 1)
    reader = opened_reader()
    reader.receive_data(frame + frame[:5])
    event = reader.next_event()
    assert isinstance(event, MethodFrame) and isinstance(event.method, commands.Channel.Open)
    assert reader.next_event() is NEED_DATA
    assert reader.buffered == 5
    reader.receive_data(frame[5:])
    event = reader.next_event()
    assert isinstance(event, MethodFrame) and event.channel == 1
    assert reader.buffered == 0


def test_heartbeat() -> None:
    data = pamqp_frame.marshal(pamqp_heartbeat.Heartbeat(), 0)
    assert data == FrameWriter.heartbeat()
    assert read_all(opened_reader(), data, step=1) == [HeartbeatFrame(0)]


def test_many_frames_in_one_read() -> None:
    frames = b"".join(pamqp_frame.marshal(commands.Basic.Ack(delivery_tag=i), 1) for i in range(50))
    events = read_all(opened_reader(), frames)
    assert [e.method.delivery_tag for e in events if isinstance(e, MethodFrame)] == list(range(50))


def test_oversized_frame_rejected_from_header_alone() -> None:
    # Only the 7-byte header of a frame claiming 4 GiB: refused before any payload is awaited.
    error = rejected(struct.pack(">BHI", 1, 1, 0xFFFFFFFF), frame_max=4096)
    assert error.reply_code == ReplyCode.FRAME_ERROR


def test_frame_exactly_at_frame_max_accepted() -> None:
    reader = opened_reader(frame_max=4096)
    data = pamqp_frame.marshal(ContentBody(b"x" * (4096 - 8)), 1)
    assert read_all(reader, data) == [ContentBodyFrame(1, b"x" * 4088)]
    reader.receive_data(pamqp_frame.marshal(ContentBody(b"x" * (4096 - 7)), 1))
    with pytest.raises(AMQPConnectionError):
        reader.next_event()


def test_bad_frame_end() -> None:
    data = bytearray(pamqp_frame.marshal(commands.Channel.Open(), 1))
    data[-1] = 0x00
    assert rejected(bytes(data)).reply_code == ReplyCode.FRAME_ERROR


def test_unknown_frame_type() -> None:
    assert rejected(b"\x05\x00\x01\x00\x00\x00\x01\x00\xce").reply_code == ReplyCode.FRAME_ERROR


def test_unknown_method_is_not_implemented() -> None:
    error = rejected(b"\x01\x00\x01\x00\x00\x00\x04\x00\x63\x00\x01\xce")
    assert error.reply_code == ReplyCode.NOT_IMPLEMENTED
    assert (error.class_id, error.method_id) == (99, 1)


@pytest.mark.parametrize(
    "payload",
    [
        b"\x00\x0a",  # shorter than class + method ids
        b"\x00\x3c\x00\x28\x00\x00\x05ex",  # basic.publish: exchange runs past the end
        b"\x00\x3c\x00\x28\x00\x00\x00\x00",  # basic.publish: bits octet missing
        b"\x00\x32\x00\x0a\x00\x00\x10q",  # queue.declare: name runs past the end
    ],
)
def test_truncated_method_arguments_are_syntax_errors(payload: bytes) -> None:
    error = rejected(struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce")
    assert error.reply_code == ReplyCode.SYNTAX_ERROR


def test_nonempty_heartbeat_is_frame_error() -> None:
    assert rejected(b"\x08\x00\x00\x00\x00\x00\x01\x00\xce").reply_code == ReplyCode.FRAME_ERROR


def test_truncated_content_header() -> None:
    error = rejected(b"\x02\x00\x01\x00\x00\x00\x0c" + b"\x00\x3c" + b"\x00" * 10 + b"\xce")
    assert error.reply_code == ReplyCode.FRAME_ERROR


def test_writer_methods_round_trip_through_pamqp() -> None:
    data = FrameWriter.method(3, commands.Queue.DeclareOk("q1", 7, 2))
    consumed, channel, value = pamqp_frame.unmarshal(data)
    assert (consumed, channel) == (len(data), 3)
    assert isinstance(value, commands.Queue.DeclareOk)
    assert (value.queue, value.message_count, value.consumer_count) == ("q1", 7, 2)


def _unmarshal_stream(data: bytes) -> list[tuple[int, object]]:
    out = []
    while data:
        consumed, channel, value = pamqp_frame.unmarshal(data)
        out.append((channel, value))
        data = data[consumed:]
    return out


@pytest.mark.parametrize("size", [0, 1, 4088, 4089, 10000])
def test_deliver_splits_body_at_frame_max(size: int) -> None:
    body = bytes(i % 251 for i in range(size))
    props = pamqp_header.ContentHeader(
        0, 0, commands.Basic.Properties(correlation_id="c-1", delivery_mode=2)
    ).marshal()[12:]
    data = FrameWriter(frame_max=4096).deliver(
        2, b"ctag", 99, True, b"amq.direct", b"key", props, body
    )
    frames = _unmarshal_stream(data)
    channel, deliver = frames[0]
    assert channel == 2 and isinstance(deliver, commands.Basic.Deliver)
    assert (deliver.consumer_tag, deliver.delivery_tag, deliver.redelivered) == ("ctag", 99, True)
    assert (deliver.exchange, deliver.routing_key) == ("amq.direct", "key")
    header = frames[1][1]
    assert isinstance(header, pamqp_header.ContentHeader)
    assert header.body_size == size
    assert header.properties.correlation_id == "c-1"
    bodies = [v for _, v in frames[2:]]
    assert all(isinstance(b, ContentBody) and len(b.value) <= 4088 for b in bodies)
    assert b"".join(b.value for b in bodies if isinstance(b, ContentBody)) == body
    assert len(bodies) == -(-size // 4088)


def test_get_ok_and_return_encode_like_pamqp() -> None:
    props = b"\x00\x00"
    data = FrameWriter().get_ok(1, 5, False, b"", b"q", 3, props, b"hi")
    frames = _unmarshal_stream(data)
    get_ok = frames[0][1]
    assert isinstance(get_ok, commands.Basic.GetOk)
    assert (get_ok.delivery_tag, get_ok.routing_key, get_ok.message_count) == (5, "q", 3)
    assert isinstance(frames[2][1], ContentBody) and frames[2][1].value == b"hi"
    data = FrameWriter().basic_return(1, 312, "NO_ROUTE", "ex", "rk", props, b"x")
    ret = _unmarshal_stream(data)[0][1]
    assert isinstance(ret, commands.Basic.Return)
    assert (ret.reply_code, ret.exchange, ret.routing_key) == (312, "ex", "rk")


# A whole pika 1.4.4 BlockingConnection session as recorded from the socket: protocol header,
# Start-Ok, Tune-Ok, Open, Channel.Open, Confirm.Select, Basic.Publish of b"Hello World!" with
# content_type and delivery_mode 2, Channel.Close, Connection.Close.
PIKA_SESSION = bytes.fromhex(
    "414d51500000090101000000000140000a000b0000011c0770726f64756374530000001a50696b6120507974686f"
    "6e20436c69656e74204c69627261727908706c6174666f726d530000000d507974686f6e20332e31312e370c6361"
    "706162696c6974696573460000008c1c61757468656e7469636174696f6e5f6661696c7572655f636c6f73657401"
    "0a62617369632e6e61636b740112636f6e6e656374696f6e2e626c6f636b6564740116636f6e73756d65725f6361"
    "6e63656c5f6e6f7469667974011a65786368616e67655f65786368616e67655f62696e64696e6773740112707562"
    "6c69736865725f636f6e6669726d7374010b696e666f726d6174696f6e53000000195365652068747470733a2f2f"
    "70696b612e727466642e6f72670776657273696f6e5300000005312e342e3405504c41494e0000000c0067756573"
    "7400677565737405656e5f5553ce0100000000000c000a001f07ff00020000003cce01000000000008000a002801"
    "2f0001ce010001000000050014000a00ce010001000000050055000a00ce0100010000000e003c00280000000568"
    "656c6c6f00ce0200010000001a003c0000000000000000000c90000a746578742f706c61696e02ce030001000000"
    "0c48656c6c6f20576f726c6421ce0100010000001a0014002800c80f4e6f726d616c2073687574646f776e000000"
    "00ce0100000000001a000a003200c80f4e6f726d616c2073687574646f776e00000000ce"
)


@pytest.mark.parametrize("step", [None, 1, 2, 5, 64])
def test_recorded_pika_session(step: int | None) -> None:
    events = read_all(FrameReader(), PIKA_SESSION, step=step)
    kinds = [
        type(e.method).__qualname__ if isinstance(e, MethodFrame) else type(e).__name__
        for e in events
    ]
    assert kinds == [
        "ProtocolHeaderReceived",
        "Connection.StartOk",
        "Connection.TuneOk",
        "Connection.Open",
        "Channel.Open",
        "Confirm.Select",
        "PublishFrame",
        "ContentHeaderFrame",
        "ContentBodyFrame",
        "Channel.Close",
        "Connection.Close",
    ]
    start_ok = events[1]
    assert isinstance(start_ok, MethodFrame)
    assert start_ok.method.client_properties["capabilities"]["consumer_cancel_notify"] is True
    tune_ok = events[2]
    assert isinstance(tune_ok, MethodFrame)
    assert (tune_ok.method.channel_max, tune_ok.method.frame_max) == (2047, 131072)
    assert events[6] == PublishFrame(1, "", "hello", mandatory=False, immediate=False)
    header = events[7]
    assert isinstance(header, ContentHeaderFrame) and header.body_size == 12
    # content-type + delivery-mode flags, then the two fields, byte-exact
    assert header.properties == b"\x90\x00\x0atext/plain\x02"
    assert events[8] == ContentBodyFrame(1, b"Hello World!")


def test_recorded_session_with_trailing_partial_frame() -> None:
    reader = FrameReader()
    reader.receive_data(PIKA_SESSION + PIKA_SESSION[8:20])
    events = []
    while (event := reader.next_event()) is not NEED_DATA:
        events.append(event)
    assert len(events) == 11
    assert reader.buffered == 12


def test_read_content_takes_header_and_body_in_one_step() -> None:
    body = bytes(range(256)) * 40
    data = publish_message_bytes(body, frame_max=4096)
    reader = opened_reader(4096)
    reader.receive_data(data + b"\x01")  # and the first byte of the next frame
    publish = reader.next_event()
    assert isinstance(publish, PublishFrame)
    content = reader.read_content(1, max_body=1 << 20)
    assert content is not None
    properties, got = content
    assert got == body
    assert properties == read_all(opened_reader(4096), data)[1].properties  # type: ignore[union-attr]
    assert reader.buffered == 1


@pytest.mark.parametrize("cut", [1, 7, 20, 40, -1])
def test_read_content_leaves_incomplete_input_alone(cut: int) -> None:
    data = publish_message_bytes(b"x" * 5000, frame_max=4096)
    reader = opened_reader(4096)
    reader.receive_data(data[:cut] if cut > 0 else data[:-1])
    if 0 < cut <= 20:  # not even the publish frame is complete
        assert reader.next_event() is NEED_DATA
        return
    assert isinstance(reader.next_event(), PublishFrame)
    before = reader.buffered
    assert reader.read_content(1, max_body=1 << 20) is None
    assert reader.buffered == before


def test_read_content_refuses_other_channel_and_oversized_bodies() -> None:
    data = publish_message_bytes(b"payload")
    reader = opened_reader()
    reader.receive_data(data)
    assert isinstance(reader.next_event(), PublishFrame)
    assert reader.read_content(2, max_body=1 << 20) is None  # content is for channel 1
    assert reader.read_content(1, max_body=3) is None  # over the size limit: general path
    assert reader.read_content(1, max_body=1 << 20) == (
        read_all(opened_reader(), data)[1].properties,  # type: ignore[union-attr]
        b"payload",
    )
