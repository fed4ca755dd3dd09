"""Message bytes <-> JSON text: UTF-8 when the bytes are valid UTF-8, base64 otherwise."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from typing import Any

from wharf.errors import InvalidArgumentError
from wharf.http.schemas import Encoding


def to_text(data: bytes) -> tuple[str, Encoding]:
    """``(text, encoding)`` for ``data``."""
    try:
        return data.decode("utf-8"), "utf8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


def from_text(text: str, encoding: Encoding, what: str = "value") -> bytes:
    """The bytes a request meant; 400 for invalid base64."""
    if encoding == "utf8":
        return text.encode("utf-8")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidArgumentError(f"{what} is not valid base64") from None


def header_text(value: Any) -> str:
    """One header value as text for display (bytes decoded when they are UTF-8)."""
    if isinstance(value, bytes | bytearray):
        text, encoding = to_text(bytes(value))
        return text if encoding == "utf8" else f"base64:{text}"
    return str(value)


def kafka_headers(headers: Iterable[tuple[str, bytes | None]]) -> dict[str, str]:
    return {key: "" if value is None else header_text(value) for key, value in headers}


def amqp_headers(headers: Mapping[str, Any]) -> dict[str, str]:
    return {key: header_text(value) for key, value in headers.items()}
