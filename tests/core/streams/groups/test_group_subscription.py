import struct

from wharf.core.streams.groups.subscription import subscribed_topics


def metadata(version: int, topics: list[str], tail: bytes = b"") -> bytes:
    out = struct.pack(">hi", version, len(topics))
    for topic in topics:
        raw = topic.encode()
        out += struct.pack(">h", len(raw)) + raw
    return out + tail


def test_topics_of_every_version_prefix() -> None:
    assert subscribed_topics(metadata(0, ["a", "bé"], struct.pack(">i", -1))) == {"a", "bé"}
    v3_tail = struct.pack(">i", 2) + b"ud" + struct.pack(">i", 0) + struct.pack(">i", 5)
    assert subscribed_topics(metadata(3, ["orders"], v3_tail)) == {"orders"}
    assert subscribed_topics(metadata(1, [])) == frozenset()


def test_malformed_metadata_is_none_not_an_exception() -> None:
    good = metadata(0, ["orders", "events"])
    assert subscribed_topics(good) == {"orders", "events"}
    for cut in range(len(good)):
        assert subscribed_topics(good[:cut]) is None, cut
    assert subscribed_topics(struct.pack(">hi", 0, 1_000_000)) is None
    assert subscribed_topics(struct.pack(">hih", 0, 1, -3)) is None
    assert subscribed_topics(metadata(0, [])[:2] + struct.pack(">ih", 1, 2) + b"\xff\xfe") is None
