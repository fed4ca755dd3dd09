"""AMQP exchanges and bindings: list, declare, delete, bind, unbind (``?vhost=``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from wharf.core.queues.exchanges import Exchange
from wharf.http.api.queues import VHOST, VHOST_FILTER, vhost_of
from wharf.http.context import context_of
from wharf.http.routing import Endpoint, Param, json_response, query_bool, read_body
from wharf.http.schemas import Binding, BindingInfo, DeclareExchange, ExchangeSummary
from wharf.http.views import broker as view


def _summary(vhost: str, exchange: Exchange) -> ExchangeSummary:
    return ExchangeSummary(
        vhost=vhost,
        name=exchange.name,
        type=exchange.type.value,
        durable=exchange.durable,
        auto_delete=exchange.auto_delete,
        internal=exchange.internal,
        arguments=dict(exchange.arguments),
    )


async def _list_exchanges(request: web.Request) -> web.StreamResponse:
    found = view.exchanges(context_of(request).broker, request.query.get("vhost"))
    return json_response([_summary(vhost, exchange) for vhost, exchange in found])


async def _describe_exchange(request: web.Request) -> web.StreamResponse:
    vhost = vhost_of(request)
    host = view.vhost(context_of(request).broker, vhost)
    return json_response(_summary(vhost, host.get_exchange(request.match_info["name"])))


async def _declare_exchange(request: web.Request) -> web.StreamResponse:
    spec = await read_body(request, DeclareExchange)
    vhost = vhost_of(request)
    host = view.vhost(context_of(request).broker, vhost)
    exchange = await host.declare_exchange(
        request.match_info["name"],
        spec.type,
        durable=spec.durable,
        auto_delete=spec.auto_delete,
        internal=spec.internal,
        arguments=spec.arguments,
    )
    return json_response(_summary(vhost, exchange))


async def _delete_exchange(request: web.Request) -> web.StreamResponse:
    host = view.vhost(context_of(request).broker, vhost_of(request))
    await host.delete_exchange(
        request.match_info["name"], if_unused=query_bool(request, "if_unused")
    )
    return web.Response(status=204)


async def _list_bindings(request: web.Request) -> web.StreamResponse:
    broker = context_of(request).broker
    hosts = view.vhosts(broker, request.query.get("vhost"))
    return json_response([info for host in hosts for info in view.bindings(host)])


async def _change_binding(request: web.Request, *, bind: bool) -> web.StreamResponse:
    spec = await read_body(request, Binding)
    host = view.vhost(context_of(request).broker, vhost_of(request))
    change: Callable[[str, str, str, dict[str, Any]], Awaitable[None]]
    if spec.destination_type == "queue":
        change = host.bind_queue if bind else host.unbind_queue
    else:
        change = host.bind_exchange if bind else host.unbind_exchange
    await change(spec.destination, spec.source, spec.routing_key, spec.arguments)
    return web.Response(status=204)


async def _bind(request: web.Request) -> web.StreamResponse:
    return await _change_binding(request, bind=True)


async def _unbind(request: web.Request) -> web.StreamResponse:
    return await _change_binding(request, bind=False)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/exchanges",
        _list_exchanges,
        "List exchanges",
        "exchanges",
        response=list[ExchangeSummary],
        query=(VHOST_FILTER,),
    ),
    Endpoint(
        "GET",
        "/api/exchanges/{name}",
        _describe_exchange,
        "One exchange",
        "exchanges",
        response=ExchangeSummary,
        query=(VHOST,),
    ),
    Endpoint(
        "PUT",
        "/api/exchanges/{name}",
        _declare_exchange,
        "Declare an exchange (idempotent with equal settings; 409 otherwise)",
        "exchanges",
        body=DeclareExchange,
        response=ExchangeSummary,
        query=(VHOST,),
    ),
    Endpoint(
        "DELETE",
        "/api/exchanges/{name}",
        _delete_exchange,
        "Delete an exchange with its bindings",
        "exchanges",
        status=204,
        query=(VHOST, Param("if_unused", "boolean", "Refuse (409) when it has bindings")),
    ),
    Endpoint(
        "GET",
        "/api/bindings",
        _list_bindings,
        "List explicit bindings",
        "bindings",
        response=list[BindingInfo],
        query=(VHOST_FILTER,),
    ),
    Endpoint(
        "POST",
        "/api/bindings",
        _bind,
        "Bind a queue or exchange to an exchange",
        "bindings",
        body=Binding,
        status=204,
        query=(VHOST,),
    ),
    Endpoint(
        "DELETE",
        "/api/bindings",
        _unbind,
        "Remove a binding (body as for POST)",
        "bindings",
        body=Binding,
        status=204,
        query=(VHOST,),
    ),
]
