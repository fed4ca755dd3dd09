"""AMQP hot-path codec: hand-written Basic.Publish decoding and Basic.Deliver encoding against
the generic pamqp path they replace. Prints microseconds per operation.

    .venv/bin/python benchmarks/amqp_codec.py
"""

from __future__ import annotations

import timeit

from pamqp import commands
from pamqp import frame as pamqp_frame
from pamqp import header as pamqp_header
from pamqp.body import ContentBody

from wharf.protocol.amqp.frames import PROTOCOL_HEADER, FrameReader, FrameWriter, PublishFrame


def per_op_us(stmt, number: int) -> float:
    return min(timeit.repeat(stmt, number=number, repeat=5)) / number * 1e6


def main() -> None:
    props = commands.Basic.Properties(content_type="application/json", delivery_mode=2)
    body = b"x" * 100
    publish = pamqp_frame.marshal(commands.Basic.Publish(exchange="", routing_key="bench-q"), 1)
    message = (
        publish
        + pamqp_frame.marshal(pamqp_header.ContentHeader(0, len(body), props), 1)
        + pamqp_frame.marshal(ContentBody(body), 1)
    )
    raw_props = pamqp_header.ContentHeader(0, 0, props).marshal()[12:]
    reader = FrameReader(frame_max=131072)
    reader.receive_data(PROTOCOL_HEADER)
    reader.next_event()

    def wharf_decode() -> None:
        reader.receive_data(message)
        reader.next_event()
        reader.next_event()
        reader.next_event()

    def wharf_decode_whole() -> None:
        reader.receive_data(message)
        publish = reader.next_event()
        assert isinstance(publish, PublishFrame)
        reader.read_content(1, 1 << 20)

    def pamqp_decode() -> None:
        data = message
        while data:
            consumed, _, _ = pamqp_frame.unmarshal(data)
            data = data[consumed:]

    writer = FrameWriter(frame_max=131072)

    def wharf_deliver() -> None:
        writer.deliver(1, b"ctag", 42, False, b"", b"bench-q", raw_props, body)

    def pamqp_deliver() -> None:
        pamqp_frame.marshal(commands.Basic.Deliver("ctag", 42, False, "", "bench-q"), 1)
        pamqp_frame.marshal(pamqp_header.ContentHeader(0, len(body), props), 1)
        pamqp_frame.marshal(ContentBody(body), 1)

    n = 20000
    rows = [
        ("decode publish+header+body (wharf)", per_op_us(wharf_decode, n)),
        ("decode publish, then whole content", per_op_us(wharf_decode_whole, n)),
        ("decode publish+header+body (pamqp)", per_op_us(pamqp_decode, n)),
        ("encode deliver+header+body (wharf)", per_op_us(wharf_deliver, n)),
        ("encode deliver+header+body (pamqp)", per_op_us(pamqp_deliver, n)),
    ]
    for name, us in rows:
        print(f"{name:40s} {us:7.2f} us")


if __name__ == "__main__":
    main()
