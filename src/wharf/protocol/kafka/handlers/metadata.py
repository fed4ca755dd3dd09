"""Metadata and DescribeCluster: where topics and partitions live (always on this node).

Metadata may create topics when a client asks for one that does not exist, if both the broker
(``auto_create_topics``) and the request (v4+ ``allow_auto_topic_creation``) allow it.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from wharf.core.streams.errors import StreamsError
from wharf.protocol.kafka.codec import KafkaRequest
from wharf.protocol.kafka.context import KafkaContext
from wharf.protocol.kafka.errors import kafka_code
from wharf.protocol.kafka.responses import NO_THROTTLE, builder

__all__ = ["describe_cluster", "ensure_topic", "metadata"]


async def ensure_topic(ctx: KafkaContext, name: str, *, allow_create: bool) -> ErrorCode:
    """``none`` if ``name`` exists or was auto-created, else the error to report."""
    topics = ctx.broker.topics
    if topics.find(name) is not None:
        return ErrorCode.none
    if not allow_create:
        return ErrorCode.unknown_topic_or_partition
    try:
        await topics.ensure(name)
    except StreamsError as exc:
        return kafka_code(exc.code)
    return ErrorCode.none


def _topic_entry(ctx: KafkaContext, build: Any, name: str, error: ErrorCode) -> Any:
    node = ctx.broker.config.node_id
    topic = ctx.broker.topics.find(name) if error == ErrorCode.none else None
    partitions = ()
    if topic is not None:
        partitions = tuple(
            build(
                "MetadataResponsePartition",
                error_code=ErrorCode.none,
                partition_index=index,
                leader_id=node,
                leader_epoch=0,
                replica_nodes=(node,),
                isr_nodes=(node,),
                offline_replicas=(),
            )
            for index in range(len(topic.partitions))
        )
    return build(
        "MetadataResponseTopic",
        error_code=error,
        name=name,
        topic_id=topic.topic_id if topic is not None else None,
        is_internal=False,
        partitions=partitions,
    )


async def metadata(ctx: KafkaContext, request: KafkaRequest) -> Any:
    body = request.body
    build = builder(request.api_key, request.api_version)
    # v0: an empty list means all topics; v1+: null means all topics, empty means none.
    requested = body.topics
    if requested is None or (request.api_version == 0 and not requested):
        names = [(t.name, ErrorCode.none) for t in ctx.broker.topics.list()]
    else:
        # v4+ lets the client forbid auto-creation; before v4 the broker setting alone decides.
        allow = getattr(body, "allow_auto_topic_creation", True)
        names = []
        for entry in requested:
            if entry.name is None:  # looked up by topic id (v10+)
                topic = ctx.broker.topics.by_id(entry.topic_id)
                if topic is None:
                    names.append(("", ErrorCode.unknown_topic_id))
                else:
                    names.append((topic.name, ErrorCode.none))
                continue
            names.append((entry.name, await ensure_topic(ctx, entry.name, allow_create=allow)))
    node = ctx.broker.config.node_id
    broker_entry = build(
        "MetadataResponseBroker",
        node_id=node,
        host=ctx.advertised_host,
        port=ctx.advertised_port,
        rack=None,
    )
    return build(
        "MetadataResponse",
        throttle_time=NO_THROTTLE,
        brokers=(broker_entry,),
        cluster_id=ctx.cluster_id,
        controller_id=node,
        topics=tuple(_topic_entry(ctx, build, name, error) for name, error in names),
    )


async def describe_cluster(ctx: KafkaContext, request: KafkaRequest) -> Any:
    build = builder(request.api_key, request.api_version)
    node = ctx.broker.config.node_id
    return build(
        "DescribeClusterResponse",
        throttle_time=NO_THROTTLE,
        error_code=ErrorCode.none,
        error_message=None,
        cluster_id=ctx.cluster_id,
        controller_id=node,
        brokers=(
            build(
                "DescribeClusterBroker",
                broker_id=node,
                host=ctx.advertised_host,
                port=ctx.advertised_port,
                rack=None,
            ),
        ),
    )
