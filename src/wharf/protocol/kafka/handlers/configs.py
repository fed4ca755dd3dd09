"""Topic configuration: DescribeConfigs, AlterConfigs and IncrementalAlterConfigs.

Topic entries are the real settings the core acts on (``retention.ms``, ``retention.bytes``,
``cleanup.policy``, ``max.message.bytes``, ``segment.bytes``, ...). A broker resource (named by
this node's id, or empty for the default) describes the broker settings Wharf acts on under
Kafka's names (:mod:`wharf.core.streams.broker_configs`); they cannot be altered over the Kafka
protocol (Wharf's broker settings come from its configuration file and flags). Every entry
carries its type (v3+).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from wharf.core.streams.broker_configs import describe_broker
from wharf.core.streams.topic_config import ConfigEntry
from wharf.protocol.kafka.codec import KafkaRequest
from wharf.protocol.kafka.context import KafkaContext
from wharf.protocol.kafka.errors import SERVED_ERRORS, error_code_for
from wharf.protocol.kafka.responses import NO_THROTTLE, builder

__all__ = ["alter_configs", "describe_configs", "incremental_alter_configs"]

RESOURCE_TOPIC = 2
RESOURCE_BROKER = 4

OP_SET, OP_DELETE, OP_APPEND, OP_SUBTRACT = 0, 1, 2, 3
LIST_CONFIGS = frozenset({"cleanup.policy"})  # the list-valued topic configs


def _current_value(ctx: KafkaContext, resource: Any, name: str) -> str:
    if resource.resource_type != RESOURCE_TOPIC:
        return ""
    if ctx.broker.topics.find(resource.resource_name) is None:
        return ""
    for entry in ctx.broker.topics.describe_configs(resource.resource_name):
        if entry.name == name:
            return entry.value or ""
    return ""


def _edit_list(current: str, value: str | None, operation: int) -> str:
    """APPEND adds the given items missing from the list; SUBTRACT removes them."""
    items = [item for item in current.split(",") if item]
    given = [item.strip() for item in (value or "").split(",") if item.strip()]
    if operation == OP_APPEND:
        items += [item for item in given if item not in items]
    else:
        items = [item for item in items if item not in given]
    return ",".join(items)


def _entries(build: Any, resource: Any, entries: list[ConfigEntry]) -> tuple[Any, ...]:
    """The described ``entries`` the request asks for (all, without configuration keys)."""
    wanted = set(resource.configuration_keys) if resource.configuration_keys else None
    return tuple(
        build(
            "DescribeConfigsResourceResult",
            name=e.name,
            value=e.value,
            read_only=e.read_only,
            is_default=e.is_default,
            config_source=int(e.source),
            is_sensitive=e.sensitive,
            synonyms=(),
            config_type=int(e.type),
            documentation=None,
        )
        for e in entries
        if wanted is None or e.name in wanted
    )


def _describe_topic(ctx: KafkaContext, build: Any, resource: Any) -> tuple[ErrorCode, Any]:
    if ctx.broker.topics.find(resource.resource_name) is None:
        return ErrorCode.unknown_topic_or_partition, ()
    return ErrorCode.none, _entries(
        build, resource, ctx.broker.topics.describe_configs(resource.resource_name)
    )


def _describe_broker(ctx: KafkaContext, build: Any, resource: Any) -> tuple[ErrorCode, Any]:
    config = ctx.broker.config
    if resource.resource_name not in ("", str(config.node_id)):
        return ErrorCode.invalid_request, ()  # another broker's: it is not this node
    listener = f"PLAINTEXT://{ctx.advertised_host}:{ctx.advertised_port}"
    return ErrorCode.none, _entries(build, resource, describe_broker(config, listener))


async def describe_configs(ctx: KafkaContext, request: KafkaRequest) -> Any:
    build = builder(request.api_key, request.api_version)
    results = []
    topics = ctx.broker.topics
    if any(
        r.resource_type == RESOURCE_TOPIC and topics.find(r.resource_name) is None
        for r in request.body.resources
    ):
        await topics.reload()  # in a cluster, a topic another node just created
    for resource in request.body.resources:
        if resource.resource_type == RESOURCE_TOPIC:
            error, entries = _describe_topic(ctx, build, resource)
        elif resource.resource_type == RESOURCE_BROKER:
            error, entries = _describe_broker(ctx, build, resource)
        else:
            error, entries = ErrorCode.invalid_request, ()
        results.append(
            build(
                "DescribeConfigsResult",
                error_code=error,
                error_message=None,
                resource_type=resource.resource_type,
                resource_name=resource.resource_name,
                configs=entries,
            )
        )
    return build("DescribeConfigsResponse", throttle_time=NO_THROTTLE, results=tuple(results))


async def _alter(
    ctx: KafkaContext,
    resource: Any,
    changes: dict[str, str | None],
    *,
    replace: bool,
    validate_only: bool,
) -> tuple[ErrorCode, str | None]:
    if resource.resource_type != RESOURCE_TOPIC:
        return ErrorCode.invalid_request, "only topic configurations can be altered"
    set_configs = {k: v for k, v in changes.items() if v is not None}
    delete = [k for k, v in changes.items() if v is None]
    try:
        await ctx.broker.topics.alter_configs(
            resource.resource_name,
            set_configs,
            delete,
            replace=replace,
            validate_only=validate_only,
        )
    except SERVED_ERRORS as exc:  # reported as this resource's error code
        return error_code_for(exc), str(exc)
    return ErrorCode.none, None


def _alter_response(build: Any, results: list[tuple[Any, ErrorCode, str | None]]) -> Any:
    return tuple(
        build(
            "AlterConfigsResourceResponse",
            error_code=error,
            error_message=message,
            resource_type=resource.resource_type,
            resource_name=resource.resource_name,
        )
        for resource, error, message in results
    )


async def incremental_alter_configs(ctx: KafkaContext, request: KafkaRequest) -> Any:
    """SET and DELETE change one entry each; APPEND/SUBTRACT apply to list-valued entries."""
    body = request.body
    build = builder(request.api_key, request.api_version)
    results = []
    for resource in body.resources:
        changes: dict[str, str | None] = {}
        error, message = ErrorCode.none, None
        for c in resource.configs:
            if c.config_operation == OP_SET:
                changes[c.name] = c.value
            elif c.config_operation == OP_DELETE:
                changes[c.name] = None
            elif c.config_operation in (OP_APPEND, OP_SUBTRACT) and c.name in LIST_CONFIGS:
                current = changes.get(c.name) or _current_value(ctx, resource, c.name)
                changes[c.name] = _edit_list(current, c.value, c.config_operation)
            else:
                error = ErrorCode.invalid_config
                message = f"{c.name}: operation {c.config_operation} is not allowed"
                break
        if error == ErrorCode.none:
            error, message = await _alter(
                ctx, resource, changes, replace=False, validate_only=body.validate_only
            )
        results.append((resource, error, message))
    return build(
        "IncrementalAlterConfigsResponse",
        throttle_time=NO_THROTTLE,
        responses=_alter_response(build, results),
    )


async def alter_configs(ctx: KafkaContext, request: KafkaRequest) -> Any:
    """The legacy call: the given entries replace the topic's whole configuration."""
    body = request.body
    build = builder(request.api_key, request.api_version)
    results = []
    for resource in body.resources:
        changes: dict[str, str | None] = {c.name: c.value for c in resource.configs}
        error, message = await _alter(
            ctx, resource, changes, replace=True, validate_only=body.validate_only
        )
        results.append((resource, error, message))
    return build(
        "AlterConfigsResponse", throttle_time=NO_THROTTLE, responses=_alter_response(build, results)
    )
