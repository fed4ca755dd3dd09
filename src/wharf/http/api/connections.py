"""Client connections, as reported by the server's listeners: list and close one."""

from __future__ import annotations

from aiohttp import web

from wharf.errors import NotFoundError
from wharf.http.context import context_of
from wharf.http.routing import Endpoint, json_response
from wharf.http.schemas import ConnectionInfo


async def _list_connections(request: web.Request) -> web.StreamResponse:
    server = context_of(request).server
    conns = server.connections() if server is not None else []
    return json_response(
        [
            ConnectionInfo(
                id=c.id,
                protocol=c.protocol,
                peer=c.peer,
                client_id=c.client_id,
                user=c.user,
                vhost=c.vhost,
                connected_since_ms=c.connected_since_ms,
                requests=c.requests,
                bytes_in=c.bytes_in,
                bytes_out=c.bytes_out,
            )
            for c in conns
        ]
    )


async def _close_connection(request: web.Request) -> web.StreamResponse:
    server = context_of(request).server
    connection_id = request.match_info["id"]
    if server is None or not await server.close_connection(connection_id):
        raise NotFoundError(f"connection {connection_id!r} not found")
    return web.Response(status=204)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/connections",
        _list_connections,
        "Open Kafka and AMQP client connections",
        "connections",
        response=list[ConnectionInfo],
    ),
    Endpoint(
        "DELETE",
        "/api/connections/{id}",
        _close_connection,
        "Close one connection",
        "connections",
        status=204,
    ),
]
