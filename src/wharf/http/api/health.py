"""Liveness (/healthz) and readiness (/readyz: every listener up, storage recovered)."""

from __future__ import annotations

from aiohttp import web

from wharf.http.context import context_of, listener_infos
from wharf.http.routing import Endpoint, json_response
from wharf.http.schemas import Health, Readiness


async def _healthz(request: web.Request) -> web.StreamResponse:
    return json_response(Health(status="ok"))


async def _readyz(request: web.Request) -> web.StreamResponse:
    context = context_of(request)
    listeners = listener_infos(context)
    # The broker object exists only once Broker.open has run recovery on every log.
    recovered = not context.broker.closed
    ready = recovered and all(listener.ready for listener in listeners)
    return json_response(
        Readiness(ready=ready, storage_recovered=recovered, listeners=listeners),
        status=200 if ready else 503,
    )


ENDPOINTS = [
    Endpoint(
        "GET", "/healthz", _healthz, "Liveness: the process answers", "health", response=Health
    ),
    Endpoint(
        "GET",
        "/readyz",
        _readyz,
        "Readiness: storage recovered and every listener up (503 otherwise)",
        "health",
        response=Readiness,
    ),
]
