"""The broker overview (version, uptime, listeners, totals, rates) and the rate history."""

from __future__ import annotations

import time
from importlib.metadata import version

from aiohttp import web

from wharf.http.context import SAMPLE_INTERVAL_S, context_of, listener_infos
from wharf.http.routing import Endpoint, json_response
from wharf.http.schemas import History, Overview, Rates, Totals
from wharf.http.views import broker as view
from wharf.http.views.counters import sample_counters


async def _overview(request: web.Request) -> web.StreamResponse:
    context = context_of(request)
    broker = context.broker
    await broker.topics.recovered()  # (every partition's positions are read)
    topics = view.topic_stats(broker)
    queues = view.queues(broker)
    counters = sample_counters(broker)
    latest = context.rates.latest()
    connections = context.server.connections() if context.server is not None else []
    totals = Totals(
        topics=len(topics),
        partitions=sum(len(t.partitions) for t in topics),
        groups=len(broker.groups.list_groups()),
        queues=len(queues),
        exchanges=len(view.exchanges(broker)),
        connections=len(connections),
        messages_published=counters.published,
        messages_delivered=counters.delivered,
        queue_depth=sum(q.message_count for q in queues if not q.recovering),
        consumer_lag=counters.consumer_lag,
        storage_bytes=view.storage_bytes(broker),
    )
    rates = Rates(
        publish_per_s=latest.publish_per_s if latest else 0.0,
        deliver_per_s=latest.deliver_per_s if latest else 0.0,
        bytes_in_per_s=latest.bytes_in_per_s if latest else 0.0,
    )
    return json_response(
        Overview(
            version=version("wharf"),
            node_id=broker.config.node_id,
            uptime_s=round(time.monotonic() - context.started_monotonic, 3),
            data_dir=str(broker.path),
            fsync=str(broker.config.fsync),
            listeners=listener_infos(context),
            totals=totals,
            rates=rates,
        )
    )


async def _history(request: web.Request) -> web.StreamResponse:
    samples = list(context_of(request).rates.history)
    return json_response(History(interval_s=SAMPLE_INTERVAL_S, samples=samples))


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/overview",
        _overview,
        "Version, uptime, listeners, totals and current rates",
        "overview",
        response=Overview,
    ),
    Endpoint(
        "GET",
        "/api/history",
        _history,
        "Per-second publish/deliver rates and consumer lag of the last five minutes",
        "overview",
        response=History,
    ),
]
