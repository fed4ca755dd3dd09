"""Partial parsing and byte-exact editing of AMQP basic properties, with real pamqp bytes."""

from __future__ import annotations

import struct
from typing import Any

import pytest
from pamqp import commands, header

from wharf.core.queues import properties as props
from wharf.core.queues.message import Message
from wharf.errors import PreconditionError


def _wire(**kw: Any) -> bytes:
    """Property bytes exactly as pamqp (a real client codec) puts them on the wire."""
    frame = header.ContentHeader(0, 0, commands.Basic.Properties(**kw)).marshal()
    # class id (2), weight (2), body size (8), then flags + fields
    return bytes(frame[12:])


def _decode(raw: bytes) -> commands.Basic.Properties:
    decoded = commands.Basic.Properties()
    decoded.unmarshal(struct.unpack(">H", raw[:2])[0], raw[2:])
    return decoded


def test_scan_reads_needed_fields_and_skips_others() -> None:
    raw = _wire(
        content_type="application/json",
        headers={"k": "v", "n": 5},
        delivery_mode=2,
        priority=7,
        correlation_id="c",
        expiration="1500",
        message_id="m",
        timestamp=None,
        app_id="app",
        user_id="guest",
    )
    s = props.scan(raw)
    assert (s.delivery_mode, s.priority, s.expiration_ms, s.user_id) == (2, 7, 1500, "guest")
    assert props.decode_headers(raw, s) == {"k": "v", "n": 5}


def test_scan_empty_and_errors() -> None:
    s = props.scan(b"\x00\x00")
    assert s.headers_span is None and s.priority is None
    with pytest.raises(props.MalformedPropertiesError):
        props.scan(b"\x00")
    with pytest.raises(props.MalformedPropertiesError):
        props.scan(_wire(content_type="abc")[:-1])
    with pytest.raises(props.MalformedPropertiesError):
        props.scan(_wire(content_type="abc") + b"x")
    with pytest.raises(props.MalformedPropertiesError):  # table length larger than the data
        props.scan(struct.pack(">HI", props.FLAG_HEADERS, 1000) + b"\x00")
    with pytest.raises(PreconditionError):
        props.scan(_wire(expiration="-5"))
    with pytest.raises(PreconditionError):
        props.scan(_wire(expiration="soon"))


def test_replace_headers_keeps_everything_else_byte_exact() -> None:
    raw = _wire(content_type="t", headers={"keep": "me", "drop": 1}, priority=3, app_id="a")
    s = props.scan(raw)
    new = props.replace_headers(raw, s, {"added": 42}, remove=["drop"])
    s2 = props.scan(new)
    assert props.decode_headers(new, s2) == {"keep": "me", "added": 42}
    decoded = _decode(new)
    assert decoded.content_type == "t" and decoded.priority == 3 and decoded.app_id == "a"
    # the untouched field bytes around the table are identical
    start, end = s.headers_span  # type: ignore[misc]
    start2, end2 = s2.headers_span  # type: ignore[misc]
    assert new[:start2] == raw[:start] and new[end2:] == raw[end:]


def test_replace_headers_when_absent_inserts_table_and_flag() -> None:
    raw = _wire(content_type="t", content_encoding="gzip", delivery_mode=1, message_id="m")
    new = props.replace_headers(raw, props.scan(raw), {"x-death": [{"count": 1}]})
    decoded = _decode(new)
    assert decoded.headers == {"x-death": [{"count": 1}]}
    assert (decoded.content_type, decoded.content_encoding, decoded.delivery_mode) == (
        "t",
        "gzip",
        1,
    )
    assert decoded.message_id == "m"
    # nothing to add: unchanged
    assert props.replace_headers(raw, props.scan(raw), {}, remove=["x"]) == raw


def test_edit_table_keeps_unencodable_entries() -> None:
    # a long string that is not UTF-8 decodes to bytes, which pamqp cannot encode again
    entry = b"\x03bin" + b"S" + struct.pack(">I", 2) + b"\xff\xfe"
    raw = struct.pack(">I", len(entry)) + entry
    edited = props.edit_table(raw, {"x": 1})
    assert entry in edited
    assert props.decode_table(edited) == {"bin": b"\xff\xfe", "x": 1}


def test_encode_properties_round_trips_through_pamqp() -> None:
    raw = props.encode_properties(
        content_type="text/plain",
        headers={"a": "b"},
        delivery_mode=2,
        priority=4,
        expiration="100",
        message_id="id",
        timestamp=1700000000,
        type="t",
        app_id="x",
    )
    decoded = _decode(raw)
    assert decoded.content_type == "text/plain" and decoded.headers == {"a": "b"}
    assert decoded.delivery_mode == 2 and decoded.priority == 4 and decoded.expiration == "100"
    assert decoded.message_id == "id" and decoded.message_type == "t"
    assert raw == _wire(
        content_type="text/plain",
        headers={"a": "b"},
        delivery_mode=2,
        priority=4,
        expiration="100",
        message_id="id",
        timestamp=decoded.timestamp,
        message_type="t",
        app_id="x",
    )


def test_message_build_and_views() -> None:
    m = Message.build(
        "ex",
        "rk",
        b"body",
        headers={"h": 1},
        persistent=True,
        priority=9,
        expiration_ms=50,
        content_type="c",
    )
    assert m.persistent and m.priority == 9 and m.expiration_ms == 50 and m.headers == {"h": 1}
    m2 = m.with_headers({"x-death": []}, remove=["h"])
    assert m2.headers == {"x-death": []} and m2.priority == 9 and m2.body == b"body"
    assert m.headers == {"h": 1}
    m3 = m.with_route("other", "k2")
    assert (m3.exchange, m3.routing_key, m3.properties) == ("other", "k2", m.properties)
    plain = Message("", "q", b"\x00\x00", b"")
    assert not plain.persistent and plain.priority == 0 and plain.headers == {}


def test_without_expiration() -> None:
    m = Message("", "q", _wire(content_type="t", expiration="250", app_id="a"), b"b")
    assert m.expiration_ms == 250 and m.expiration_text == "250"
    m2 = m.without_expiration()
    assert m2.expiration_ms is None and m2.expiration_text is None
    decoded = _decode(m2.properties)
    assert decoded.content_type == "t" and decoded.app_id == "a" and decoded.expiration is None
    assert m2.without_expiration().properties == m2.properties


def test_scan_every_truncation_fails_and_cache_changes_nothing() -> None:
    raw = _wire(
        content_type="text/plain",
        headers={"a": 1},
        delivery_mode=2,
        priority=3,
        expiration="60000",
        message_id="id-1",
        timestamp=None,
    )
    fresh = props.scan(bytearray(raw))  # not cacheable: scanned afresh
    assert props.scan(raw) == fresh and props.scan(raw) == fresh  # second one from the cache
    assert (fresh.delivery_mode, fresh.priority, fresh.expiration_ms) == (2, 3, 60000)
    for cut in range(len(raw)):
        for _ in range(2):  # a failure is never cached
            with pytest.raises(props.MalformedPropertiesError):
                props.scan(raw[:cut])
    # an octet field alone at the end, cut off
    with pytest.raises(props.MalformedPropertiesError):
        props.scan(struct.pack(">H", props.FLAG_DELIVERY_MODE | props.FLAG_PRIORITY) + b"\x02")
