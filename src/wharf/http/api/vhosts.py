"""AMQP virtual hosts: list, create, delete. A new virtual host grants nobody access; grant it
with ``PUT /api/users/{name}/permissions?vhost=``. Every change is saved with the definitions."""

from __future__ import annotations

from aiohttp import web

from wharf.core.queues.vhost import VirtualHost
from wharf.http.context import context_of
from wharf.http.routing import Endpoint, json_response
from wharf.http.schemas import VhostSummary
from wharf.http.views import broker as view


def _summary(vhost: VirtualHost) -> VhostSummary:
    return VhostSummary(vhost.name, len(vhost.queues), len(vhost.exchanges))


async def _list_vhosts(request: web.Request) -> web.StreamResponse:
    return json_response([_summary(v) for v in view.vhosts(context_of(request).broker)])


async def _create_vhost(request: web.Request) -> web.StreamResponse:
    vhosts = context_of(request).broker.vhosts
    name = request.match_info["name"]
    existed = name in vhosts
    vhost = await vhosts.create(name)
    return json_response(_summary(vhost), status=200 if existed else 201)


async def _delete_vhost(request: web.Request) -> web.StreamResponse:
    await context_of(request).broker.vhosts.delete(request.match_info["name"])
    return web.Response(status=204)


ENDPOINTS = [
    Endpoint("GET", "/api/vhosts", _list_vhosts, "List virtual hosts", "vhosts",
             response=list[VhostSummary]),
    Endpoint("PUT", "/api/vhosts/{name}", _create_vhost,
             "Create a virtual host (idempotent: 201 when created, 200 when it existed)",
             "vhosts", response=VhostSummary, status=201),
    Endpoint("DELETE", "/api/vhosts/{name}", _delete_vhost,
             "Delete a virtual host with its queues, exchanges and permissions", "vhosts",
             status=204),
]
