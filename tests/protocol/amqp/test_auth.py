"""PLAIN and AMQPLAIN responses as clients send them."""

from __future__ import annotations

import pytest
from pamqp import encode as amqp_encode

from wharf.protocol.amqp.auth import parse_credentials
from wharf.protocol.amqp.errors import AMQPConnectionError, ReplyCode


def test_plain() -> None:
    assert parse_credentials("PLAIN", "\x00guest\x00secret") == ("guest", "secret")
    assert parse_credentials("PLAIN", b"admin\x00bob\x00p\xc3\xa4ss") == ("bob", "päss")


def test_amqplain_as_py_amqp_writes_it() -> None:
    table = amqp_encode.field_table({"LOGIN": "guest", "PASSWORD": "guest"})[4:]  # no length
    assert parse_credentials("AMQPLAIN", table) == ("guest", "guest")


@pytest.mark.parametrize(
    "mechanism,response,code",
    [
        ("PLAIN", "guest", ReplyCode.SYNTAX_ERROR),
        ("PLAIN", "\x00a\x00b\x00c", ReplyCode.SYNTAX_ERROR),
        ("AMQPLAIN", amqp_encode.field_table({"LOGIN": "x"})[4:], ReplyCode.SYNTAX_ERROR),
        ("AMQPLAIN", b"\x05LOGINS\x00\x00\x00\x09short", ReplyCode.SYNTAX_ERROR),
        ("EXTERNAL", "", ReplyCode.COMMAND_INVALID),
    ],
)
def test_refused(mechanism: str, response: str | bytes, code: ReplyCode) -> None:
    with pytest.raises(AMQPConnectionError) as info:
        parse_credentials(mechanism, response)
    assert info.value.reply_code == code
