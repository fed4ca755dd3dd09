"""Declarative endpoint table shared by the router and the OpenAPI document.

How it works: every API module lists its endpoints as :class:`Endpoint` values (method, path,
handler, summary, typed request body and response, query parameters). ``app.py`` registers the
handlers with aiohttp and ``openapi.py`` renders the same list, so an endpoint cannot exist
without being documented. Request bodies are msgspec ``Struct`` types: decoding validates them
and their JSON Schema comes from msgspec as well.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
from aiohttp import web

from wharf.errors import InvalidArgumentError

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Param:
    """A query parameter of an endpoint."""

    name: str
    type: str  # "string", "integer" or "boolean"
    description: str
    required: bool = False


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One HTTP endpoint: routing data plus what the OpenAPI document says about it."""

    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    body: type[Any] | None = None
    response: Any = None  # a type msgspec can describe, or None for "no body"
    status: int = 200
    query: tuple[Param, ...] = field(default_factory=tuple)
    content_type: str = "application/json"


def json_response(value: Any, status: int = 200) -> web.Response:
    """Encode ``value`` (Structs, dicts, lists, scalars) as a JSON response."""
    return web.Response(
        body=msgspec.json.encode(value), status=status, content_type="application/json"
    )


async def read_body(request: web.Request, kind: type[T]) -> T:
    """Decode and validate the JSON body of ``request`` as ``kind``.

    An empty body decodes as ``{}`` so that bodies whose fields all have defaults may be left
    out. aiohttp enforces the application's body size limit while reading (413).
    """
    raw = await request.read()
    try:
        return msgspec.json.decode(raw or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        raise InvalidArgumentError(f"invalid request body: {exc}") from None
    except msgspec.DecodeError as exc:
        raise InvalidArgumentError(f"request body is not valid JSON: {exc}") from None


def query_int(request: web.Request, name: str, default: int | None = None) -> int | None:
    """An integer query parameter, ``default`` when absent; 400 when not an integer."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgumentError(f"query parameter {name!r} must be an integer") from None


def query_bool(request: web.Request, name: str, default: bool = False) -> bool:
    """A boolean query parameter (true/false/1/0/yes/no)."""
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    value = raw.lower()
    if value in ("1", "true", "yes"):
        return True
    if value in ("0", "false", "no"):
        return False
    raise InvalidArgumentError(f"query parameter {name!r} must be true or false")


def path_int(request: web.Request, name: str) -> int:
    """An integer path segment; 400 when not an integer."""
    try:
        return int(request.match_info[name])
    except ValueError:
        raise InvalidArgumentError(f"{name} must be an integer") from None
