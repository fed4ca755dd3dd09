"""SASL mechanisms of Connection.Start-Ok: PLAIN and RabbitMQ's AMQPLAIN.

PLAIN's response is ``authzid \\0 username \\0 password`` (RFC 4616; the authorisation identity
is ignored). AMQPLAIN's is an AMQP field table with ``LOGIN`` and ``PASSWORD``, written without
its 4-byte length prefix.
"""

from __future__ import annotations

from pamqp import decode as amqp_decode

from wharf.protocol.amqp.errors import AMQPConnectionError, ReplyCode

__all__ = ["MECHANISMS", "parse_credentials"]

#: What Connection.Start offers, in order of preference.
MECHANISMS = "PLAIN AMQPLAIN"


def parse_credentials(mechanism: str, response: str | bytes) -> tuple[str, str]:
    """Username and password from a Start-Ok response; 502 if malformed, 503 if unknown."""
    raw = response.encode("utf-8") if isinstance(response, str) else bytes(response)
    if mechanism == "PLAIN":
        parts = raw.split(b"\x00")
        if len(parts) != 3:
            raise AMQPConnectionError(ReplyCode.SYNTAX_ERROR, "malformed PLAIN response")
        return parts[1].decode("utf-8", "replace"), parts[2].decode("utf-8", "replace")
    if mechanism == "AMQPLAIN":
        try:
            _, table = amqp_decode.field_table(len(raw).to_bytes(4, "big") + raw)
        except (ValueError, KeyError, IndexError, UnicodeDecodeError) as exc:
            raise AMQPConnectionError(
                ReplyCode.SYNTAX_ERROR, f"malformed AMQPLAIN response: {exc}"
            ) from exc
        login, password = table.get("LOGIN"), table.get("PASSWORD")
        if not isinstance(login, str | bytes) or not isinstance(password, str | bytes):
            raise AMQPConnectionError(ReplyCode.SYNTAX_ERROR, "AMQPLAIN needs LOGIN and PASSWORD")
        as_str = [
            v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in (login, password)
        ]
        return as_str[0], as_str[1]
    raise AMQPConnectionError(
        ReplyCode.COMMAND_INVALID, f"unsupported authentication mechanism {mechanism!r}"
    )
