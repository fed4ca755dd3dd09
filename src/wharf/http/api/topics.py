"""Topics: list, describe (partitions, offsets, bytes, groups with lag), create, alter, delete."""

from __future__ import annotations

import msgspec
from aiohttp import web

from wharf.core.broker import Broker
from wharf.errors import InvalidArgumentError
from wharf.http.context import context_of
from wharf.http.routing import Endpoint, json_response, read_body
from wharf.http.schemas import (
    AlterConfigs,
    CreateTopic,
    PartitionInfo,
    TopicDetail,
    TopicGroupLag,
    TopicSummary,
)
from wharf.http.views import broker as view


def _summary(stats: view.TopicStats) -> TopicSummary:
    partitions = [
        PartitionInfo(
            partition=p.partition,
            log_start_offset=p.start_offset,
            high_watermark=p.high_watermark,
            messages=p.high_watermark - p.start_offset,
            bytes=p.size_bytes,
        )
        for p in stats.partitions
    ]
    return TopicSummary(
        name=stats.name,
        topic_id=stats.topic_id,
        partition_count=len(partitions),
        messages=sum(p.messages for p in partitions),
        bytes=sum(p.bytes for p in partitions),
        configs=stats.configs,
        partitions=partitions,
    )


def topic_detail(broker: Broker, name: str) -> TopicDetail:
    summary = _summary(view.one_topic_stats(broker, name))
    lags: dict[str, int] = {}
    for group, row in view.all_group_offsets(broker):
        if row.topic == name:
            lags[group] = lags.get(group, 0) + row.lag
    return TopicDetail(
        **msgspec.structs.asdict(summary),
        groups=[TopicGroupLag(group=g, lag=lag) for g, lag in sorted(lags.items())],
    )


async def _list_topics(request: web.Request) -> web.StreamResponse:
    broker = context_of(request).broker
    await broker.topics.recovered()  # (every partition's positions are read)
    return json_response([_summary(s) for s in view.topic_stats(broker)])


async def _create_topic(request: web.Request) -> web.StreamResponse:
    broker = context_of(request).broker
    spec = await read_body(request, CreateTopic)
    await broker.topics.create(spec.name, spec.partitions, spec.configs)
    return json_response(topic_detail(broker, spec.name), status=201)


async def _describe_topic(request: web.Request) -> web.StreamResponse:
    return json_response(topic_detail(context_of(request).broker, request.match_info["name"]))


async def _alter_configs(request: web.Request) -> web.StreamResponse:
    broker = context_of(request).broker
    name = request.match_info["name"]
    spec = await read_body(request, AlterConfigs)
    if not spec.configs:
        raise InvalidArgumentError("no configs to change")
    set_configs = {k: v for k, v in spec.configs.items() if v is not None}
    delete = [k for k, v in spec.configs.items() if v is None]
    await broker.topics.alter_configs(name, set_configs, delete)
    return json_response(topic_detail(broker, name))


async def _delete_topic(request: web.Request) -> web.StreamResponse:
    await context_of(request).broker.delete_topic(request.match_info["name"])
    return web.Response(status=204)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/topics",
        _list_topics,
        "List topics with partitions (offsets, sizes), messages, bytes and configs",
        "topics",
        response=list[TopicSummary],
    ),
    Endpoint(
        "POST",
        "/api/topics",
        _create_topic,
        "Create a topic",
        "topics",
        body=CreateTopic,
        response=TopicDetail,
        status=201,
    ),
    Endpoint(
        "GET",
        "/api/topics/{name}",
        _describe_topic,
        "Partitions with offsets and sizes, groups with lag, configs",
        "topics",
        response=TopicDetail,
    ),
    Endpoint(
        "PATCH",
        "/api/topics/{name}/configs",
        _alter_configs,
        "Set topic configs (null resets one to the default)",
        "topics",
        body=AlterConfigs,
        response=TopicDetail,
    ),
    Endpoint(
        "DELETE",
        "/api/topics/{name}",
        _delete_topic,
        "Delete a topic and its data",
        "topics",
        status=204,
    ),
]
