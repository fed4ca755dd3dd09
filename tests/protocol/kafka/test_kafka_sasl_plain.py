"""The SASL PLAIN token (RFC 4616) as Kafka clients send it in SaslAuthenticate."""

from __future__ import annotations

import pytest

from wharf.protocol.kafka.handlers.sasl import SaslPlainError, parse_plain


def test_plain_tokens_as_clients_send_them() -> None:
    assert parse_plain(b"\x00guest\x00guest") == ("guest", "guest")  # librdkafka, kafka-python
    assert parse_plain(b"alice\x00alice\x00s3cr\xc3\xa9t") == ("alice", "s3cr\u00e9t")


@pytest.mark.parametrize(
    ("token", "why"),
    [
        (b"", "not authzid NUL authcid NUL password"),
        (b"guest\x00guest", "not authzid NUL authcid NUL password"),
        (b"\x00a\x00b\x00c", "not authzid NUL authcid NUL password"),
        (b"\x00\x00password", "user name and a password"),
        (b"\x00guest\x00", "user name and a password"),
        (b"\x00gu\xffest\x00pw", "not UTF-8"),
        (b"mallory\x00guest\x00guest", "authorization identity"),
        (b"\x00" + b"u" * 256 + b"\x00pw", "1 to 255 bytes"),
        (b"\x00u\x00" + b"p" * 2000, "too long"),
    ],
)
def test_malformed_tokens_are_refused(token: bytes, why: str) -> None:
    with pytest.raises(SaslPlainError, match=why):
        parse_plain(token)
