"""The HTTP layer's pure helpers, on real bytes: assignment decoding (kio-encoded), payload
text encodings, and the latency histogram's export."""

from __future__ import annotations

import io
import struct

import pytest
from kio.schema.consumer_protocol_assignment.v0 import data as v0
from kio.schema.consumer_protocol_assignment.v3 import data as v3
from kio.serial import entity_writer

from wharf.core.stats import Histogram
from wharf.errors import InvalidArgumentError
from wharf.http.metrics.latency import histogram_family
from wharf.http.views.assignments import decode_assignment
from wharf.http.views.payloads import from_text, header_text, to_text


def _encode(version: int, entity: object) -> bytes:
    out = io.BytesIO()
    entity_writer(type(entity))(out, entity)
    return struct.pack(">h", version) + out.getvalue()


def test_decode_assignment_versions_and_garbage() -> None:
    raw0 = _encode(
        0,
        v0.ConsumerProtocolAssignment(
            assigned_partitions=(
                v0.TopicPartition(topic="b", partitions=(2, 0)),
                v0.TopicPartition(topic="a", partitions=(1,)),
            ),
            user_data=None,
        ),
    )
    assert decode_assignment(raw0) == {"a": [1], "b": [0, 2]}
    raw3 = _encode(
        3,
        v3.ConsumerProtocolAssignment(
            assigned_partitions=(v3.TopicPartition(topic="t", partitions=(5, 4)),),
            user_data=b"xyz",
        ),
    )
    assert decode_assignment(raw3) == {"t": [4, 5]}
    assert decode_assignment(b"") == {}
    assert decode_assignment(b"\x00") == {}
    for cut in range(2, len(raw0)):
        decode_assignment(raw0[:cut])  # never raises on a truncated assignment
    assert decode_assignment(raw0[:-3]) == {}


def test_payload_text_round_trip() -> None:
    assert to_text("héllo".encode()) == ("héllo", "utf8")
    assert to_text(b"\xff\x00") == ("/wA=", "base64")
    assert from_text("/wA=", "base64") == b"\xff\x00"
    assert from_text("héllo", "utf8") == "héllo".encode()
    with pytest.raises(InvalidArgumentError):
        from_text("not base64!", "base64")
    assert header_text(b"plain") == "plain"
    assert header_text(b"\xff") == "base64:/w=="
    assert header_text(7) == "7"


def test_latency_histogram_exports_cumulative_buckets() -> None:
    histogram = Histogram((0.01, 0.1))
    for seconds in (0.005, 0.05, 0.05, 3.0):
        histogram.observe(seconds)
    family = histogram_family("h_seconds", "doc", ["route"], [(["GET /x"], histogram)])
    assert {s.labels.get("route") for s in family.samples} == {"GET /x"}
    samples = {(s.name, s.labels.get("le")): s.value for s in family.samples}
    assert samples[("h_seconds_bucket", "0.01")] == 1
    assert samples[("h_seconds_bucket", "0.1")] == 3
    assert samples[("h_seconds_bucket", "+Inf")] == 4
    assert samples[("h_seconds_count", None)] == 4
    assert samples[("h_seconds_sum", None)] == pytest.approx(3.105)
