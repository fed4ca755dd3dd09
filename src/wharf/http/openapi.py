"""The OpenAPI 3.1 document, rendered from the endpoint table.

How it works: each :class:`~wharf.http.routing.Endpoint` becomes one operation. Path
parameters come from the ``{name}`` segments, query parameters from ``Endpoint.query``, and the
request and response schemas from msgspec's JSON Schema generator over the Struct types in
:mod:`wharf.http.schemas`, collected into ``components/schemas``. Every error response points
at the shared ``ErrorBody`` schema.
"""

from __future__ import annotations

import re
from importlib.metadata import version
from typing import Any

import msgspec
from aiohttp import web

from wharf.http.context import context_of
from wharf.http.routing import Endpoint, json_response
from wharf.http.schemas import ErrorBody

_REF = "#/components/schemas/{name}"
_PATH_PARAM = re.compile(r"{(\w+)}")
_PATH_PARAM_TYPES = {"partition": "integer"}


def build_document(endpoints: list[Endpoint]) -> dict[str, Any]:
    """The OpenAPI document describing ``endpoints``."""
    types: list[Any] = [ErrorBody]
    for endpoint in endpoints:
        if endpoint.body is not None:
            types.append(endpoint.body)
        if endpoint.response is not None:
            types.append(endpoint.response)
    schemas, components = msgspec.json.schema_components(types, ref_template=_REF)
    schema_of = dict(zip(map(id, types), schemas, strict=True))
    error_ref = schema_of[id(ErrorBody)]

    paths: dict[str, dict[str, Any]] = {}
    for endpoint in endpoints:
        operation: dict[str, Any] = {
            "operationId": _operation_id(endpoint),
            "summary": endpoint.summary,
            "tags": [endpoint.tag],
        }
        parameters = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": _PATH_PARAM_TYPES.get(name, "string")},
            }
            for name in _PATH_PARAM.findall(endpoint.path)
        ]
        parameters += [
            {
                "name": param.name,
                "in": "query",
                "required": param.required,
                "description": param.description,
                "schema": {"type": param.type},
            }
            for param in endpoint.query
        ]
        if parameters:
            operation["parameters"] = parameters
        if endpoint.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schema_of[id(endpoint.body)]}},
            }
        success: dict[str, Any] = {"description": "success"}
        if endpoint.response is not None:
            success["content"] = {
                endpoint.content_type: {"schema": schema_of[id(endpoint.response)]}
            }
        elif endpoint.content_type != "application/json":
            success["content"] = {endpoint.content_type: {"schema": {"type": "string"}}}
        error = {"description": "error", "content": {"application/json": {"schema": error_ref}}}
        operation["responses"] = {str(endpoint.status): success, "4XX": error, "5XX": error}
        paths.setdefault(endpoint.path, {})[endpoint.method.lower()] = operation

    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Wharf HTTP API",
            "version": version("wharf"),
            "description": "Manage and observe a Wharf broker: topics, consumer groups, "
            "queues, exchanges, bindings, connections and messages.",
        },
        "paths": paths,
        "components": {"schemas": components},
    }


def _operation_id(endpoint: Endpoint) -> str:
    return endpoint.handler.__name__.lstrip("_")


async def _openapi(request: web.Request) -> web.StreamResponse:
    return json_response(build_document(context_of(request).endpoints))


ENDPOINTS = [
    Endpoint("GET", "/openapi.json", _openapi, "This OpenAPI document", "meta", response=dict),
]
