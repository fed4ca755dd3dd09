"""Consumer groups: list, describe (members, committed offsets, lag), reset offsets, delete."""

from __future__ import annotations

from aiohttp import web

from wharf.core.broker import Broker
from wharf.core.streams.errors import ErrorCode
from wharf.core.streams.offsets import OffsetAndMetadata, TopicPartition
from wharf.errors import InvalidArgumentError, NotFoundError, PreconditionError
from wharf.http.context import context_of
from wharf.http.routing import Endpoint, json_response, read_body
from wharf.http.schemas import (
    Assignment,
    GroupDetail,
    GroupSummary,
    MemberInfo,
    OffsetChange,
    ResetOffsets,
    ResetResult,
)
from wharf.http.views import broker as view
from wharf.http.views.assignments import decode_assignment


def _require_group(broker: Broker, group: str) -> None:
    if not any(listing.group_id == group for listing in broker.groups.list_groups()):
        raise NotFoundError(f"consumer group {group!r} not found")


async def _list_groups(request: web.Request) -> web.StreamResponse:
    broker = context_of(request).broker
    result = []
    for listing in broker.groups.list_groups():
        description = broker.groups.describe_group(listing.group_id)
        lag = sum(row.lag for row in view.group_offsets(broker, listing.group_id))
        result.append(
            GroupSummary(
                group=listing.group_id,
                state=str(listing.state),
                protocol_type=listing.protocol_type,
                members=len(description.members),
                lag=lag,
            )
        )
    return json_response(result)


async def _describe_group(request: web.Request) -> web.StreamResponse:
    broker = context_of(request).broker
    group = request.match_info["group"]
    _require_group(broker, group)
    description = broker.groups.describe_group(group)
    members = [
        MemberInfo(
            member_id=m.member_id,
            client_id=m.client_id,
            client_host=m.client_host,
            assignments=[
                Assignment(topic=topic, partitions=parts)
                for topic, parts in decode_assignment(m.assignment).items()
            ],
        )
        for m in description.members
    ]
    offsets = view.group_offsets(broker, group)
    return json_response(
        GroupDetail(
            group=group,
            state=str(description.state),
            protocol_type=description.protocol_type,
            protocol=description.protocol_name,
            members=members,
            offsets=offsets,
            lag=sum(row.lag for row in offsets),
        )
    )


def _target_partitions(broker: Broker, group: str, spec: ResetOffsets) -> list[TopicPartition]:
    """The partitions a reset applies to: the named topic's, else those the group committed."""
    if spec.topic is not None:
        count = view.partition_count(broker, spec.topic)
        wanted = spec.partitions if spec.partitions is not None else list(range(count))
        for partition in wanted:
            if not 0 <= partition < count:
                raise InvalidArgumentError(f"topic {spec.topic!r} has no partition {partition}")
        return [TopicPartition(spec.topic, p) for p in wanted]
    if spec.partitions is not None:
        raise InvalidArgumentError("partitions need a topic")
    committed = broker.groups.fetch_offsets(group)
    if not committed:
        raise InvalidArgumentError(f"group {group!r} has no committed offsets; name a topic")
    return sorted(tp for tp in committed if view.high_watermark(broker, *tp) is not None)


async def _new_offset(broker: Broker, tp: TopicPartition, spec: ResetOffsets) -> int:
    start, end = view.offset_bounds(broker, tp.topic, tp.partition)
    if spec.to == "earliest":
        return start
    if spec.to == "latest":
        return end
    if spec.to == "offset":
        if spec.offset is None:
            raise InvalidArgumentError("to=offset needs an offset")
        return min(max(spec.offset, start), end)
    if spec.timestamp_ms is None:
        raise InvalidArgumentError("to=timestamp needs timestamp_ms")
    found = await view.offset_for_timestamp(broker, tp.topic, tp.partition, spec.timestamp_ms)
    return end if found is None else found


async def _reset_offsets(request: web.Request) -> web.StreamResponse:
    broker = context_of(request).broker
    group = request.match_info["group"]
    spec = await read_body(request, ResetOffsets)
    targets = _target_partitions(broker, group, spec)
    current = broker.groups.fetch_offsets(group, targets)
    changes = [
        OffsetChange(
            topic=tp.topic,
            partition=tp.partition,
            current=current[tp].offset if tp in current else None,
            new=await _new_offset(broker, tp, spec),
        )
        for tp in targets
    ]
    if spec.execute:
        description = broker.groups.describe_group(group)
        if description.members:
            raise PreconditionError(
                f"group {group!r} has {len(description.members)} active members; "
                "stop its consumers before resetting offsets"
            )
        codes = await broker.groups.commit_offsets(
            group,
            {TopicPartition(c.topic, c.partition): OffsetAndMetadata(c.new) for c in changes},
        )
        failed = {tp: code for tp, code in codes.items() if code is not ErrorCode.NONE}
        if failed:
            tp, code = next(iter(failed.items()))
            raise PreconditionError(f"commit refused for {tp.topic}[{tp.partition}]: {code.name}")
    return json_response(ResetResult(group=group, executed=spec.execute, changes=changes))


async def _delete_group(request: web.Request) -> web.StreamResponse:
    broker = context_of(request).broker
    group = request.match_info["group"]
    code = (await broker.groups.delete_groups([group]))[group]
    if code is ErrorCode.GROUP_ID_NOT_FOUND:
        raise NotFoundError(f"consumer group {group!r} not found")
    if code is ErrorCode.NON_EMPTY_GROUP:
        raise PreconditionError(f"group {group!r} still has active members")
    if code is not ErrorCode.NONE:
        raise InvalidArgumentError(f"cannot delete group {group!r}: {code.name}")
    return web.Response(status=204)


ENDPOINTS = [
    Endpoint(
        "GET",
        "/api/groups",
        _list_groups,
        "List consumer groups with total lag",
        "groups",
        response=list[GroupSummary],
    ),
    Endpoint(
        "GET",
        "/api/groups/{group}",
        _describe_group,
        "Members, assignments, committed offsets and lag per partition",
        "groups",
        response=GroupDetail,
    ),
    Endpoint(
        "POST",
        "/api/groups/{group}/reset-offsets",
        _reset_offsets,
        "Move committed offsets to earliest/latest/timestamp/offset (dry run unless "
        "execute is true; the group must have no active members)",
        "groups",
        body=ResetOffsets,
        response=ResetResult,
    ),
    Endpoint(
        "DELETE",
        "/api/groups/{group}",
        _delete_group,
        "Delete a consumer group without members, with its committed offsets",
        "groups",
        status=204,
    ),
]
