"""Topic administration: CreateTopics, DeleteTopics, CreatePartitions.

Replication factors other than -1 (broker default) and 1 are refused: Wharf is one node.
Manual replica assignments are accepted only when they name this node.
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from wharf.protocol.kafka.codec import KafkaRequest
from wharf.protocol.kafka.context import KafkaContext
from wharf.protocol.kafka.errors import SERVED_ERRORS, error_code_for
from wharf.protocol.kafka.responses import NO_THROTTLE, builder

__all__ = ["create_partitions", "create_topics", "delete_topics"]


def _topic_configs(ctx: KafkaContext, build: Any, name: str) -> tuple[Any, ...]:
    entries = ctx.broker.topics.describe_configs(name)
    return tuple(
        build(
            "CreatableTopicConfigs",
            name=e.name,
            value=e.value,
            read_only=e.read_only,
            config_source=int(e.source),
            is_sensitive=e.sensitive,
        )
        for e in entries
    )


async def _create_one(
    ctx: KafkaContext, topic: Any, validate_only: bool
) -> tuple[ErrorCode, str | None]:
    if topic.assignments:
        if topic.num_partitions != -1:
            return ErrorCode.invalid_request, "give either partitions or replica assignments"
        node = ctx.broker.config.node_id
        if any(tuple(a.broker_ids) != (node,) for a in topic.assignments):
            return ErrorCode.invalid_replica_assignment, f"replicas must be [{node}]"
    partitions = len(topic.assignments) if topic.assignments else topic.num_partitions
    configs = {c.name: c.value for c in topic.configs}
    try:
        await ctx.broker.topics.create(
            topic.name,
            None if partitions == -1 else partitions,
            configs,
            replication_factor=topic.replication_factor,
            validate_only=validate_only,
        )
    except SERVED_ERRORS as exc:  # reported as this topic's error code
        return error_code_for(exc), str(exc)
    return ErrorCode.none, None


async def create_topics(ctx: KafkaContext, request: KafkaRequest) -> Any:
    body = request.body
    build = builder(request.api_key, request.api_version)
    results = []
    for topic in body.topics:
        error, message = await _create_one(ctx, topic, body.validate_only)
        created = ctx.broker.topics.find(topic.name) if error == ErrorCode.none else None
        if created is None and error == ErrorCode.none:  # validate_only
            count = topic.num_partitions if topic.num_partitions != -1 else len(topic.assignments)
            if count <= 0:
                count = ctx.broker.config.topic_defaults.partitions
            configs: tuple[Any, ...] | None = None
        else:
            count = len(created.partitions) if created is not None else -1
            # v5+ report the created topic's configuration back.
            configs = None
            if created is not None and request.api_version >= 5:
                configs = _topic_configs(ctx, build, topic.name)
        results.append(
            build(
                "CreatableTopicResult",
                name=topic.name,
                topic_id=created.topic_id if created is not None else None,
                error_code=error,
                error_message=message,
                topic_config_error_code=0,
                num_partitions=count if error == ErrorCode.none else -1,
                replication_factor=1 if error == ErrorCode.none else -1,
                configs=configs,
            )
        )
    return build("CreateTopicsResponse", throttle_time=NO_THROTTLE, topics=tuple(results))


async def delete_topics(ctx: KafkaContext, request: KafkaRequest) -> Any:
    body = request.body
    build = builder(request.api_key, request.api_version)
    if hasattr(body, "topics") and body.topics:
        wanted = [(t.name, t.topic_id) for t in body.topics]
    else:
        wanted = [(name, None) for name in body.topic_names]
    results = []
    topics = ctx.broker.topics
    for name, topic_id in wanted:
        topic = topics.find(name) if name else topics.by_id(topic_id)
        if topic is None:
            await topics.reload()  # in a cluster, a topic another node just created
            topic = topics.find(name) if name else topics.by_id(topic_id)
        error, message = ErrorCode.none, None
        if topic is None:
            error = ErrorCode.unknown_topic_id if not name else ErrorCode.unknown_topic_or_partition
        else:
            name, topic_id = topic.name, topic.topic_id
            try:
                await ctx.broker.delete_topic(name)
            except SERVED_ERRORS as exc:  # reported as this topic's error code
                error, message = error_code_for(exc), str(exc)
        results.append(
            build(
                "DeletableTopicResult",
                name=name,
                topic_id=topic_id,
                error_code=error,
                error_message=message,
            )
        )
    return build("DeleteTopicsResponse", throttle_time=NO_THROTTLE, responses=tuple(results))


async def create_partitions(ctx: KafkaContext, request: KafkaRequest) -> Any:
    body = request.body
    build = builder(request.api_key, request.api_version)
    results = []
    for topic in body.topics:
        error, message = ErrorCode.none, None
        try:
            await ctx.broker.topics.add_partitions(
                topic.name, topic.count, validate_only=body.validate_only
            )
        except SERVED_ERRORS as exc:  # reported as this topic's error code
            error, message = error_code_for(exc), str(exc)
        results.append(
            build(
                "CreatePartitionsTopicResult",
                name=topic.name,
                error_code=error,
                error_message=message,
            )
        )
    return build("CreatePartitionsResponse", throttle_time=NO_THROTTLE, results=tuple(results))
