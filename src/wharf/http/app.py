"""The HTTP front end: JSON API, OpenAPI document, Prometheus metrics and the dashboard.

How it works: :func:`start_http` builds one aiohttp application inside the broker's event
loop and listens on ``host:port``; ``wharf serve`` binds its sockets first and hands them to
:func:`serve_sockets` (:mod:`wharf.http.listener` says why). Every API module contributes
:class:`Endpoint` rows; they are registered here and rendered into ``/openapi.json`` by
:mod:`wharf.http.openapi`. One middleware turns every error into a JSON body
``{"error": ...}`` with a fitting 4xx/5xx status, so handlers just raise :mod:`wharf.errors`
exceptions. Request bodies are capped by aiohttp's
``client_max_size`` (413 past it). A background task samples broker counters once a second for
the rates shown by the overview and the dashboard charts.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Sequence
from importlib import resources

from aiohttp import web

from wharf.core.broker import Broker
from wharf.errors import (
    AccessRefusedError,
    AlreadyExistsError,
    BrokerError,
    InvalidArgumentError,
    NotFoundError,
    PreconditionError,
    ResourceLockedError,
    StorageError,
)
from wharf.http import openapi
from wharf.http.api import (
    cluster,
    connections,
    exchanges,
    groups,
    health,
    messages,
    overview,
    queues,
    topics,
    users,
    vhosts,
)
from wharf.http.context import CONTEXT, ApiContext
from wharf.http.listener import DEFAULT_MAX_BODY_BYTES
from wharf.http.metrics import endpoint as metrics
from wharf.http.routing import Endpoint, Handler, json_response
from wharf.http.status import ServerView

__all__ = ["DEFAULT_MAX_BODY_BYTES", "HttpServer", "build_app", "serve_sockets", "start_http"]

log = logging.getLogger(__name__)

SHUTDOWN_GRACE_S = 5.0  # how long running requests (long polls included) may finish on close

_STATUS_FOR_ERROR: tuple[tuple[type[Exception], int], ...] = (
    (NotFoundError, 404),
    (AlreadyExistsError, 409),
    (InvalidArgumentError, 400),  # before 409: some invalid values are also preconditions
    (PreconditionError, 409),
    (ResourceLockedError, 423),
    (AccessRefusedError, 403),
    (BrokerError, 400),
)


def all_endpoints() -> list[Endpoint]:
    """Every endpoint of the API, in the order the OpenAPI document lists them."""
    return [
        *health.ENDPOINTS,
        *overview.ENDPOINTS,
        *cluster.ENDPOINTS,
        *topics.ENDPOINTS,
        *groups.ENDPOINTS,
        *queues.ENDPOINTS,
        *exchanges.ENDPOINTS,
        *connections.ENDPOINTS,
        *users.ENDPOINTS,
        *vhosts.ENDPOINTS,
        *messages.ENDPOINTS,
        *metrics.ENDPOINTS,
        *openapi.ENDPOINTS,
    ]


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        reason = exc.text if exc.text and not exc.text.startswith(str(exc.status)) else exc.reason
        return json_response({"error": reason}, status=exc.status)
    except StorageError as exc:
        log.warning("storage error serving %s %s: %s", request.method, request.path, exc)
        return json_response({"error": str(exc)}, status=503)
    except Exception as exc:
        for kind, status in _STATUS_FOR_ERROR:
            if isinstance(exc, kind):
                return json_response({"error": str(exc)}, status=status)
        log.exception("unexpected error serving %s %s", request.method, request.path)
        return json_response({"error": "internal error"}, status=500)


async def _dashboard(request: web.Request) -> web.StreamResponse:
    return _static_file("index.html", "text/html")


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    kinds = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}
    suffix = name[name.rfind(".") :] if "." in name else ""
    if "/" in name or suffix not in kinds:
        raise NotFoundError(f"no static file {name!r}")
    return _static_file(name, kinds[suffix])


def _static_file(name: str, content_type: str) -> web.Response:
    asset = resources.files("wharf.http").joinpath("static", name)
    if not asset.is_file():
        raise NotFoundError(f"no static file {name!r}")
    return web.Response(
        body=asset.read_bytes(),
        content_type=content_type,
        charset="utf-8",
        headers={"Cache-Control": "no-cache"},
    )


def build_app(
    broker: Broker,
    server: ServerView | None = None,
    *,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> web.Application:
    """The aiohttp application serving ``broker`` (``server`` supplies listeners/connections)."""
    app = web.Application(
        middlewares=[metrics.timing_middleware, _json_errors], client_max_size=max_body_bytes
    )
    context = ApiContext(broker=broker, server=server, endpoints=all_endpoints())
    app[CONTEXT] = context
    for endpoint in context.endpoints:
        app.router.add_route(endpoint.method, endpoint.path, endpoint.handler)
    app.router.add_get("/", _dashboard)
    app.router.add_get("/static/{name}", _static)

    async def run_sampler(app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(context.rates.run(), name="wharf-http-rates")
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    app.cleanup_ctx.append(run_sampler)
    return app


class HttpServer:
    """A running HTTP listener; ``await close()`` stops it."""

    def __init__(self, runner: web.AppRunner) -> None:
        self._runner = runner

    @property
    def port(self) -> int:
        """The bound port (useful when started on port 0)."""
        for address in self._runner.addresses:
            return int(address[1])
        raise RuntimeError("HTTP listener is not bound")

    async def close(self) -> None:
        """Stop listening, let running requests finish (long polls end within
        :data:`SHUTDOWN_GRACE_S`), then close every connection."""
        await self._runner.cleanup()


async def start_http(
    broker: Broker,
    host: str,
    port: int,
    *,
    server: ServerView | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> HttpServer:
    """Serve the API, metrics and dashboard for ``broker`` on ``host:port`` (0 = any free)."""
    app = build_app(broker, server, max_body_bytes=max_body_bytes)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return HttpServer(runner)


async def serve_sockets(
    broker: Broker,
    sockets: Sequence[socket.socket],
    *,
    server: ServerView | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> HttpServer:
    """Serve the API, metrics and dashboard for ``broker`` on listening ``sockets`` (as
    :class:`~wharf.http.listener.HttpListener` binds them), which the server then owns."""
    app = build_app(broker, server, max_body_bytes=max_body_bytes)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
    await runner.setup()
    try:
        for sock in sockets:
            await web.SockSite(runner, sock).start()
    except BaseException:
        await runner.cleanup()
        raise
    return HttpServer(runner)
