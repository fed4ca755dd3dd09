"""AMQP queues: list, describe (with bindings and consumers), declare, purge, delete (``?vhost=``,
default ``/``)."""

from __future__ import annotations

import msgspec
from aiohttp import web

from wharf.core.queues.consumers import Consumer
from wharf.core.queues.queue import Queue
from wharf.http.context import ApiContext, context_of
from wharf.http.routing import Endpoint, Param, json_response, query_bool, read_body
from wharf.http.schemas import DeclareQueue, Purged, QueueConsumer, QueueDetail, QueueSummary
from wharf.http.views import broker as view

VHOST = Param("vhost", "string", "Virtual host (default /)")
VHOST_FILTER = Param("vhost", "string", "Only this virtual host (default: all)")


def vhost_of(request: web.Request) -> str:
    return request.query.get("vhost", "/")


def queue_summary(context: ApiContext, queue: Queue) -> QueueSummary:
    publish, deliver, ack = context.rates.queue_rates.get((queue.vhost, queue.name), (0, 0, 0))
    return QueueSummary(
        vhost=queue.vhost,
        name=queue.name,
        type=queue.args.queue_type.value,
        durable=queue.durable,
        auto_delete=queue.auto_delete,
        exclusive=queue.exclusive,
        arguments=dict(queue.arguments),
        state="recovering" if queue.recovering else "running",
        messages=None if queue.recovering else queue.message_count,
        unacked=queue.unacked_count,
        consumers=queue.consumer_count,
        published=queue.published,
        delivered=queue.delivered,
        acked=queue.acked,
        publish_per_s=publish,
        deliver_per_s=deliver,
        ack_per_s=ack,
    )


async def _list_queues(request: web.Request) -> web.StreamResponse:
    context = context_of(request)
    found = view.queues(context.broker, request.query.get("vhost"))
    return json_response([queue_summary(context, q) for q in found])


def _consumer(queue: Queue, consumer: Consumer) -> QueueConsumer:
    active = queue.active_consumer
    return QueueConsumer(
        tag=consumer.tag,
        ack_required=not consumer.no_ack,
        exclusive=consumer.exclusive,
        active=active is None or active is consumer,
    )


async def _describe_queue(request: web.Request) -> web.StreamResponse:
    context = context_of(request)
    vhost = vhost_of(request)
    queue = view.queue(context.broker, vhost, request.match_info["name"])
    await queue.recovered()  # one queue: read back now if a crash left it unread
    return json_response(
        QueueDetail(
            **msgspec.structs.asdict(queue_summary(context, queue)),
            bindings=view.bindings(view.vhost(context.broker, vhost), queue=queue.name),
            consumer_details=[_consumer(queue, c) for c in queue.consumers],
        )
    )


async def _declare_queue(request: web.Request) -> web.StreamResponse:
    context = context_of(request)
    spec = await read_body(request, DeclareQueue)
    host = view.vhost(context.broker, vhost_of(request))
    queue = await host.declare_queue(
        request.match_info["name"],
        durable=spec.durable,
        auto_delete=spec.auto_delete,
        arguments=spec.arguments,
    )
    return json_response(queue_summary(context, queue))


async def _purge_queue(request: web.Request) -> web.StreamResponse:
    host = view.vhost(context_of(request).broker, vhost_of(request))
    return json_response(Purged(purged=await host.purge_queue(request.match_info["name"])))


async def _delete_queue(request: web.Request) -> web.StreamResponse:
    host = view.vhost(context_of(request).broker, vhost_of(request))
    await host.delete_queue(
        request.match_info["name"],
        if_unused=query_bool(request, "if_unused"),
        if_empty=query_bool(request, "if_empty"),
    )
    return web.Response(status=204)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/queues",
        _list_queues,
        "List queues with depth, unacked, consumers and publish/deliver/ack rates",
        "queues",
        response=list[QueueSummary],
        query=(VHOST_FILTER,),
    ),
    Endpoint(
        "GET",
        "/api/queues/{name}",
        _describe_queue,
        "One queue with the bindings that route to it and its consumers on this node",
        "queues",
        response=QueueDetail,
        query=(VHOST,),
    ),
    Endpoint(
        "PUT",
        "/api/queues/{name}",
        _declare_queue,
        "Declare a queue (idempotent with equal arguments; 409 otherwise)",
        "queues",
        body=DeclareQueue,
        response=QueueSummary,
        query=(VHOST,),
    ),
    Endpoint(
        "POST",
        "/api/queues/{name}/purge",
        _purge_queue,
        "Drop every ready message",
        "queues",
        response=Purged,
        query=(VHOST,),
    ),
    Endpoint(
        "DELETE",
        "/api/queues/{name}",
        _delete_queue,
        "Delete a queue",
        "queues",
        status=204,
        query=(
            VHOST,
            Param("if_unused", "boolean", "Refuse (409) when it has consumers"),
            Param("if_empty", "boolean", "Refuse (409) when it holds messages"),
        ),
    ),
]
