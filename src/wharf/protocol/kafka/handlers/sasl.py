"""SaslHandshake and SaslAuthenticate: SASL PLAIN (RFC 4616) against the broker's user store.

How it works. When the listener requires SASL, a connection may send only ApiVersions,
SaslHandshake and SaslAuthenticate until it has authenticated (:func:`refuse_before_auth`,
called by the dispatcher, closes it otherwise, as Kafka does). SaslHandshake v1 picks the
mechanism; only ``PLAIN`` is offered (v0, which sends the SASL tokens outside Kafka framing, is
not served). SaslAuthenticate carries the PLAIN token ``authzid NUL authcid NUL password``; the
password is checked by the same :class:`~wharf.core.users.UserStore` AMQP logins use (off the
event loop: the hash takes milliseconds), so one set of users serves both protocols. A failed
attempt is answered with SASL_AUTHENTICATION_FAILED and the connection is then closed. There is
no re-authentication (session lifetime 0) and no authorization: an authenticated client may
call every API.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
from functools import partial
from typing import Any

from kio.schema.errors import ErrorCode

from wharf.errors import AccessRefusedError
from wharf.protocol.kafka.codec import KafkaRequest
from wharf.protocol.kafka.context import KafkaContext
from wharf.protocol.kafka.errors import KafkaProtocolError
from wharf.protocol.kafka.responses import builder

__all__ = ["PLAIN", "SaslPlainError", "parse_plain", "refuse_before_auth", "sasl_authenticate",
           "sasl_handshake"]

PLAIN = "PLAIN"
# API keys a connection may use before it has authenticated.
_BEFORE_AUTH = frozenset({17, 18, 36})  # SaslHandshake, ApiVersions, SaslAuthenticate
# RFC 4616: each of authzid, authcid and password is at most 255 octets.
_MAX_FIELD = 255


class SaslPlainError(ValueError):
    """A PLAIN token that is not ``authzid NUL authcid NUL password``."""


def parse_plain(token: bytes) -> tuple[str, str]:
    """``(user, password)`` from a PLAIN token; :class:`SaslPlainError` when malformed, or when
    it asks to act as another user (an authorization identity other than its own)."""
    if len(token) > 3 * _MAX_FIELD + 2:
        raise SaslPlainError(f"PLAIN token of {len(token)} bytes is too long")
    parts = token.split(b"\0")
    if len(parts) != 3:
        raise SaslPlainError("PLAIN token is not authzid NUL authcid NUL password")
    try:
        authzid, user, password = (part.decode("utf-8") for part in parts)
    except UnicodeDecodeError:
        raise SaslPlainError("PLAIN token is not UTF-8") from None
    if not user or not password or any(len(p) > _MAX_FIELD for p in parts):
        raise SaslPlainError("PLAIN token needs a user name and a password of 1 to 255 bytes")
    if authzid and authzid != user:
        raise SaslPlainError("PLAIN authorization identity must be empty or the user's own")
    return user, password


def refuse_before_auth(ctx: KafkaContext, request: KafkaRequest) -> None:
    """Raise :class:`KafkaProtocolError` (the connection closes) for a request that needs an
    authenticated connection on a listener that requires SASL."""
    if ctx.sasl_required and ctx.session.user is None and request.api_key not in _BEFORE_AUTH:
        raise KafkaProtocolError(
            f"API key {request.api_key} before SASL authentication",
            code=ErrorCode.illegal_sasl_state,
        )


async def sasl_handshake(ctx: KafkaContext, request: KafkaRequest) -> Any:
    build = builder(request.api_key, request.api_version)
    session = ctx.session
    if not ctx.sasl_required or session.user is not None:
        session.close_after_response = "SaslHandshake where no SASL handshake is expected"
        return build("SaslHandshakeResponse", error_code=ErrorCode.illegal_sasl_state,
                     mechanisms=(PLAIN,) if ctx.sasl_required else ())
    if request.body.mechanism != PLAIN:
        session.close_after_response = f"SASL mechanism {request.body.mechanism!r} not offered"
        return build("SaslHandshakeResponse", error_code=ErrorCode.unsupported_sasl_mechanism,
                     mechanisms=(PLAIN,))
    session.mechanism = PLAIN
    return build("SaslHandshakeResponse", error_code=ErrorCode.none, mechanisms=(PLAIN,))


async def sasl_authenticate(ctx: KafkaContext, request: KafkaRequest) -> Any:
    build = builder(request.api_key, request.api_version)
    session = ctx.session

    def refused(code: ErrorCode, message: str, why: str) -> Any:
        session.close_after_response = why
        return build("SaslAuthenticateResponse", error_code=code, error_message=message,
                     auth_bytes=b"", session_lifetime=datetime.timedelta(0))

    if session.mechanism != PLAIN or session.user is not None:
        return refused(ErrorCode.illegal_sasl_state, "no SASL handshake in progress",
                       "SaslAuthenticate without a SASL handshake in progress")
    try:
        user, password = parse_plain(bytes(request.body.auth_bytes))
    except SaslPlainError as exc:
        return refused(ErrorCode.sasl_authentication_failed, f"Authentication failed: {exc}",
                       f"SASL authentication failed: {exc}")
    users = ctx.broker.users
    check = partial(users.authenticate, user, password, loopback=_is_loopback(ctx.client_host))
    try:
        await asyncio.get_running_loop().run_in_executor(None, check)
    except AccessRefusedError:
        return refused(
            ErrorCode.sasl_authentication_failed,
            "Authentication failed: invalid username or password",
            f"SASL authentication failed for user {user!r}",
        )
    session.user = user
    return build("SaslAuthenticateResponse", error_code=ErrorCode.none, error_message=None,
                 auth_bytes=b"", session_lifetime=datetime.timedelta(0))


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
