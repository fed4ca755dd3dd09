"""One byte stream, read whole, in pieces and with trailing bytes: the same messages come out.

The connection reads a published message in one of two ways: frame by frame through
``FrameReader.next_event`` (content header, then body frames), or, when everything is already
buffered, in one step with ``FrameReader.read_content``. Which way is taken depends only on how
the bytes were cut by the network; these tests feed one real stream (encoded by pamqp) cut in
many ways and check that the messages and other frames that come out are always the same.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from pamqp import commands
from pamqp import frame as pamqp_frame
from pamqp import header as pamqp_header
from pamqp import heartbeat as pamqp_heartbeat
from pamqp.body import ContentBody

from wharf.protocol.amqp.frames import (
    NEED_DATA,
    PROTOCOL_HEADER,
    ContentBodyFrame,
    ContentHeaderFrame,
    FrameReader,
    HeartbeatFrame,
    MethodFrame,
    ProtocolHeaderReceived,
    PublishFrame,
)

FRAME_MAX = 4096
MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Published:
    channel: int
    exchange: str
    routing_key: str
    properties: bytes
    body: bytes


def publish(
    channel: int, routing_key: str, body: bytes, props: commands.Basic.Properties
) -> bytes:
    method = commands.Basic.Publish(exchange="ex", routing_key=routing_key)
    parts = [
        pamqp_frame.marshal(method, channel),
        pamqp_frame.marshal(pamqp_header.ContentHeader(0, len(body), props), channel),
    ]
    chunk = FRAME_MAX - 8
    parts += [
        pamqp_frame.marshal(ContentBody(body[i : i + chunk]), channel)
        for i in range(0, len(body), chunk)
    ]
    return b"".join(parts)


def raw_properties(props: commands.Basic.Properties) -> bytes:
    return pamqp_header.ContentHeader(0, 0, props).marshal()[12:]


PLAIN = commands.Basic.Properties()
RICH = commands.Basic.Properties(
    content_type="application/json", delivery_mode=2, headers={"k": "v", "n": 7}
)
MESSAGES = [
    Published(1, "ex", "empty", raw_properties(PLAIN), b""),
    Published(1, "ex", "small", raw_properties(RICH), b"hello"),
    Published(2, "ex", "split", raw_properties(RICH), bytes(range(256)) * 40),  # 3 frames
    Published(1, "ex", "exact", raw_properties(PLAIN), b"x" * (FRAME_MAX - 8)),
]

STREAM = b"".join(
    [
        PROTOCOL_HEADER,
        pamqp_frame.marshal(commands.Channel.Open(), 1),
        publish(1, "empty", b"", PLAIN),
        pamqp_frame.marshal(pamqp_heartbeat.Heartbeat(), 0),
        publish(1, "small", b"hello", RICH),
        publish(2, "split", bytes(range(256)) * 40, RICH),
        pamqp_frame.marshal(commands.Basic.Ack(delivery_tag=3, multiple=True), 1),
        publish(1, "exact", b"x" * (FRAME_MAX - 8), PLAIN),
    ]
)
OTHER_FRAMES = ["ProtocolHeaderReceived", "Channel.Open", "Heartbeat", "Basic.Ack"]


class ConnectionLikeReader:
    """Reads frames the way the connection does: ``read_content`` after every Basic.Publish,
    the general path for whatever it leaves."""

    def __init__(self) -> None:
        self.reader = FrameReader(frame_max=FRAME_MAX)
        self.messages: list[Published] = []
        self.others: list[str] = []
        self.whole_contents = 0  # messages read in one step by read_content
        self._pending: dict[int, tuple[PublishFrame, bytes, int, list[bytes]]] = {}

    def feed(self, data: bytes) -> None:
        reader = self.reader
        reader.receive_data(data)
        while (event := reader.next_event()) is not NEED_DATA:
            if isinstance(event, PublishFrame):
                content = reader.read_content(event.channel, MAX_BODY)
                if content is None:
                    self._pending[event.channel] = (event, b"", -1, [])
                else:
                    self.whole_contents += 1
                    self._done(event, *content)
            elif isinstance(event, ContentHeaderFrame):
                frame, _, _, _ = self._pending[event.channel]
                if event.body_size == 0:
                    del self._pending[event.channel]
                    self._done(frame, event.properties, b"")
                else:
                    self._pending[event.channel] = (frame, event.properties, event.body_size, [])
            elif isinstance(event, ContentBodyFrame):
                frame, properties, size, parts = self._pending[event.channel]
                parts.append(event.payload)
                if sum(map(len, parts)) == size:
                    del self._pending[event.channel]
                    self._done(frame, properties, b"".join(parts))
            elif isinstance(event, MethodFrame):
                self.others.append(event.method.name)
            elif isinstance(event, HeartbeatFrame):
                self.others.append("Heartbeat")
            else:
                assert isinstance(event, ProtocolHeaderReceived)
                self.others.append("ProtocolHeaderReceived")

    def _done(self, frame: PublishFrame, properties: bytes, body: bytes) -> None:
        self.messages.append(
            Published(frame.channel, frame.exchange, frame.routing_key, properties, body)
        )


def read(data: bytes, step: int | None) -> ConnectionLikeReader:
    reading = ConnectionLikeReader()
    if step is None:
        reading.feed(data)
    else:
        for i in range(0, len(data), step):
            reading.feed(data[i : i + step])
    return reading


def test_whole_input_takes_every_message_in_one_step() -> None:
    reading = read(STREAM, None)
    assert reading.messages == MESSAGES
    assert reading.others == OTHER_FRAMES
    assert reading.whole_contents == len(MESSAGES)
    assert reading.reader.buffered == 0


@pytest.mark.parametrize("step", [1, 2, 7, 13, 100, 4095, 4096, 4097])
def test_the_same_messages_come_out_however_the_stream_is_cut(step: int) -> None:
    reading = read(STREAM, step)
    assert reading.messages == MESSAGES
    assert reading.others == OTHER_FRAMES
    assert reading.reader.buffered == 0


def test_one_byte_at_a_time_never_reads_a_content_in_one_step() -> None:
    reading = read(STREAM, 1)
    assert reading.whole_contents == 0
    assert reading.messages == MESSAGES


@pytest.mark.parametrize("step", [None, 1, 50])
@pytest.mark.parametrize(
    "trailing",
    [
        b"\x01",  # the first byte of a method frame
        pamqp_frame.marshal(commands.Basic.Publish(exchange="ex", routing_key="next"), 1)[:-1],
        publish(1, "next", b"body", PLAIN)[:-3],  # a whole message but its last three bytes
    ],
)
def test_trailing_bytes_stay_buffered_and_change_nothing(step: int | None, trailing: bytes) -> None:
    reading = read(STREAM + trailing, step)
    assert reading.messages == MESSAGES
    assert reading.others == OTHER_FRAMES
    # A message cut short may have had its Basic.Publish read; the rest stays buffered.
    assert reading.reader.buffered <= len(trailing)
    assert reading.reader.buffered > 0
