"""The cluster's nodes (/api/cluster): ``{"mode": "single-node", ...}`` outside a cluster."""

from __future__ import annotations

from aiohttp import web

from wharf.http.context import context_of
from wharf.http.routing import Endpoint, json_response
from wharf.http.schemas import ClusterView
from wharf.http.views.cluster import cluster_view


async def _cluster(request: web.Request) -> web.StreamResponse:
    return json_response(await cluster_view(context_of(request).broker))


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/cluster",
        _cluster,
        "The cluster's registered nodes: ids, Kafka broker ids, listeners, heartbeats and leases"
        " (mode single-node and no nodes outside a cluster)",
        "cluster",
        response=ClusterView,
    ),
]
