"""The ``/metrics`` route and the middleware timing every API request.

The route imports the collector (and with it prometheus-client) at its first scrape, not when
the HTTP app is built: a broker's start-up pays for no exporter it may never be asked for.
"""

from __future__ import annotations

import time

from aiohttp import web

from wharf.http.context import context_of
from wharf.http.routing import Endpoint, Handler

__all__ = ["CONTENT_TYPE", "ENDPOINTS", "timing_middleware"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@web.middleware
async def timing_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Observe each API request's duration under its route template."""
    started = time.perf_counter()
    try:
        return await handler(request)
    finally:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        context_of(request).broker.stats.http[f"{request.method} {route}"].observe(
            time.perf_counter() - started
        )


async def _metrics(request: web.Request) -> web.StreamResponse:
    from wharf.http.metrics.collector import exposition

    context = context_of(request)
    await context.broker.topics.recovered()  # (every partition's positions are read)
    body = exposition(context)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})


ENDPOINTS = [
    Endpoint(
        "GET",
        "/metrics",
        _metrics,
        "Prometheus metrics (text exposition format)",
        "metrics",
        content_type="text/plain",
    ),
]
