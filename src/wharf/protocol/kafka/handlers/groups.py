"""Consumer-group APIs: FindCoordinator, Join/Sync/Heartbeat/LeaveGroup, offsets, admin.

A single node coordinates every group itself. In a cluster, each group has one coordinator,
the live broker that rendezvous hashing of the group id chooses (``FindCoordinator`` names it);
the other nodes answer that group's requests with ``NOT_COORDINATOR``. The membership state
machine lives in ``core`` (:mod:`wharf.core.streams.groups.coordinator`, protocol-neutral); these
handlers translate Kafka requests of every supported version into its calls and its result
records back into responses. Before a synchronous call (heartbeat, leave, offset fetch,
describe) they let the coordinator claim the group (``ensure_coordinator``, a no-op on a single
node).
"""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from wharf.core.streams.groups.placement import coordinator_for
from wharf.core.streams.groups.types import GroupState, LeaveMember
from wharf.core.streams.offsets import OffsetAndMetadata, TopicPartition
from wharf.protocol.kafka.codec import KafkaRequest
from wharf.protocol.kafka.context import KafkaContext
from wharf.protocol.kafka.errors import kafka_code
from wharf.protocol.kafka.responses import NO_THROTTLE, builder, has_field

__all__ = [
    "delete_groups",
    "describe_groups",
    "find_coordinator",
    "heartbeat",
    "join_group",
    "leave_group",
    "list_groups",
    "offset_commit",
    "offset_delete",
    "offset_fetch",
    "sync_group",
]

_KEY_TYPE_GROUP = 0


def _ms(delta: Any) -> int:
    return int(delta.total_seconds() * 1000)


def _coordinator(ctx: KafkaContext, key_type: int, key: str) -> tuple[Any, int, str, int]:
    """``(error, node id, host, port)`` of the coordinator of ``key``."""
    # Transactions are not served: a lookup of a transaction coordinator (key type 1) is refused.
    if key_type != _KEY_TYPE_GROUP:
        return ErrorCode.coordinator_not_available, -1, "", -1
    cluster = ctx.broker.cluster
    if cluster is None:  # this node coordinates every group
        return ErrorCode.none, ctx.broker.config.node_id, ctx.advertised_host, ctx.advertised_port
    chosen = coordinator_for(key, cluster.brokers)
    if chosen is None:
        return ErrorCode.coordinator_not_available, -1, "", -1
    return ErrorCode.none, chosen.broker_id, chosen.host, chosen.kafka_port


async def find_coordinator(ctx: KafkaContext, request: KafkaRequest) -> Any:
    body = request.body
    build = builder(request.api_key, request.api_version)
    key_type = getattr(body, "key_type", _KEY_TYPE_GROUP)
    if has_field(body, "coordinator_keys"):
        coordinators = []
        for key in body.coordinator_keys:
            error, node, host, port = _coordinator(ctx, key_type, key)
            coordinators.append(
                build(
                    "Coordinator",
                    key=key,
                    node_id=node,
                    host=host,
                    port=port,
                    error_code=error,
                    error_message=None,
                )
            )
        return build(
            "FindCoordinatorResponse", throttle_time=NO_THROTTLE, coordinators=tuple(coordinators)
        )
    error, node, host, port = _coordinator(ctx, key_type, body.key)
    return build(
        "FindCoordinatorResponse",
        throttle_time=NO_THROTTLE,
        error_code=error,
        error_message=None,
        node_id=node,
        host=host,
        port=port,
    )


async def join_group(ctx: KafkaContext, request: KafkaRequest) -> Any:
    body = request.body
    build = builder(request.api_key, request.api_version)
    session_ms = _ms(body.session_timeout)
    rebalance_ms = (
        _ms(body.rebalance_timeout) if has_field(body, "rebalance_timeout") else session_ms
    )
    result = await ctx.broker.groups.join_group(
        body.group_id,
        body.member_id,
        group_instance_id=getattr(body, "group_instance_id", None),
        client_id=request.client_id or "",
        client_host=ctx.client_host,
        session_timeout_ms=session_ms,
        rebalance_timeout_ms=rebalance_ms,
        protocol_type=body.protocol_type,
        protocols=[(p.name, bytes(p.metadata)) for p in body.protocols],
        # v4+: a new member gets its id in a MEMBER_ID_REQUIRED answer and joins again with it.
        require_known_member_id=request.api_version >= 4,
    )
    protocol_name = result.protocol_name
    if protocol_name is None and request.api_version < 7:
        protocol_name = ""
    members = tuple(
        build(
            "JoinGroupResponseMember",
            member_id=m.member_id,
            group_instance_id=m.group_instance_id,
            metadata=m.metadata,
        )
        for m in result.members
    )
    return build(
        "JoinGroupResponse",
        throttle_time=NO_THROTTLE,
        error_code=kafka_code(result.error),
        generation_id=result.generation_id,
        protocol_type=result.protocol_type,
        protocol_name=protocol_name,
        leader=result.leader_id,
        skip_assignment=result.skip_assignment,
        member_id=result.member_id,
        members=members,
    )


async def sync_group(ctx: KafkaContext, request: KafkaRequest) -> Any:
    body = request.body
    build = builder(request.api_key, request.api_version)
    result = await ctx.broker.groups.sync_group(
        body.group_id,
        body.member_id,
        body.generation_id,
        group_instance_id=getattr(body, "group_instance_id", None),
        protocol_type=getattr(body, "protocol_type", None),
        protocol_name=getattr(body, "protocol_name", None),
        assignments={a.member_id: bytes(a.assignment) for a in body.assignments},
    )
    return build(
        "SyncGroupResponse",
        throttle_time=NO_THROTTLE,
        error_code=kafka_code(result.error),
        protocol_type=result.protocol_type,
        protocol_name=result.protocol_name,
        assignment=result.assignment,
    )


async def heartbeat(ctx: KafkaContext, request: KafkaRequest) -> Any:
    body = request.body
    build = builder(request.api_key, request.api_version)
    await ctx.broker.groups.ensure_coordinator(body.group_id)
    error = ctx.broker.groups.heartbeat(
        body.group_id,
        body.member_id,
        body.generation_id,
        group_instance_id=getattr(body, "group_instance_id", None),
    )
    return build("HeartbeatResponse", throttle_time=NO_THROTTLE, error_code=kafka_code(error))


async def leave_group(ctx: KafkaContext, request: KafkaRequest) -> Any:
    body = request.body
    build = builder(request.api_key, request.api_version)
    if has_field(body, "members"):
        leaving = [LeaveMember(m.member_id, m.group_instance_id) for m in body.members]
    else:
        leaving = [LeaveMember(body.member_id)]
    await ctx.broker.groups.ensure_coordinator(body.group_id)
    result = ctx.broker.groups.leave_group(body.group_id, leaving)
    if not has_field(body, "members"):
        # v0-2: one member, its outcome is the top-level error code.
        error = result.error
        if error == 0 and result.members:
            error = result.members[0][1]
        return build("LeaveGroupResponse", throttle_time=NO_THROTTLE, error_code=kafka_code(error))
    members = tuple(
        build(
            "MemberResponse",
            member_id=member.member_id,
            group_instance_id=member.group_instance_id,
            error_code=kafka_code(error),
        )
        for member, error in result.members
    )
    return build(
        "LeaveGroupResponse",
        throttle_time=NO_THROTTLE,
        error_code=kafka_code(result.error),
        members=members,
    )


async def describe_groups(ctx: KafkaContext, request: KafkaRequest) -> Any:
    build = builder(request.api_key, request.api_version)
    groups = []
    for group_id in request.body.groups:
        await ctx.broker.groups.ensure_coordinator(group_id)
        d = ctx.broker.groups.describe_group(group_id)
        members = tuple(
            build(
                "DescribedGroupMember",
                member_id=m.member_id,
                group_instance_id=m.group_instance_id,
                client_id=m.client_id,
                client_host=m.client_host,
                member_metadata=m.metadata,
                member_assignment=m.assignment,
            )
            for m in d.members
        )
        groups.append(
            build(
                "DescribedGroup",
                error_code=kafka_code(d.error),
                group_id=d.group_id,
                group_state=str(d.state),
                protocol_type=d.protocol_type,
                protocol_data=d.protocol_name,
                members=members,
            )
        )
    return build("DescribeGroupsResponse", throttle_time=NO_THROTTLE, groups=tuple(groups))


async def list_groups(ctx: KafkaContext, request: KafkaRequest) -> Any:
    build = builder(request.api_key, request.api_version)
    states_filter = getattr(request.body, "states_filter", ())
    known = {str(state): state for state in GroupState}
    states = [known[s] for s in states_filter if s in known] if states_filter else None
    listed = tuple(
        build(
            "ListedGroup",
            group_id=g.group_id,
            protocol_type=g.protocol_type,
            group_state=str(g.state),
        )
        for g in ctx.broker.groups.list_groups(states)
    )
    return build(
        "ListGroupsResponse", throttle_time=NO_THROTTLE, error_code=ErrorCode.none, groups=listed
    )


async def delete_groups(ctx: KafkaContext, request: KafkaRequest) -> Any:
    build = builder(request.api_key, request.api_version)
    errors = await ctx.broker.groups.delete_groups(request.body.groups_names)
    results = [
        build("DeletableGroupResult", group_id=group_id, error_code=kafka_code(error))
        for group_id, error in errors.items()
    ]
    return build("DeleteGroupsResponse", throttle_time=NO_THROTTLE, results=tuple(results))


async def offset_commit(ctx: KafkaContext, request: KafkaRequest) -> Any:
    body = request.body
    build = builder(request.api_key, request.api_version)
    offsets = {
        TopicPartition(topic.name, p.partition_index): OffsetAndMetadata(
            p.committed_offset,
            p.committed_metadata or "",
            getattr(p, "committed_leader_epoch", -1),
        )
        for topic in body.topics
        for p in topic.partitions
    }
    errors = await ctx.broker.groups.commit_offsets(
        body.group_id,
        offsets,
        member_id=body.member_id,
        generation_id=body.generation_id_or_member_epoch,
        group_instance_id=getattr(body, "group_instance_id", None),
    )
    topics = tuple(
        build(
            "OffsetCommitResponseTopic",
            name=topic.name,
            partitions=tuple(
                build(
                    "OffsetCommitResponsePartition",
                    partition_index=p.partition_index,
                    error_code=kafka_code(errors[TopicPartition(topic.name, p.partition_index)]),
                )
                for p in topic.partitions
            ),
        )
        for topic in body.topics
    )
    return build("OffsetCommitResponse", throttle_time=NO_THROTTLE, topics=topics)


async def _fetched_topics(
    ctx: KafkaContext, build: Any, group_id: str, topics: Any, batched: bool
) -> tuple[Any, tuple[Any, ...]]:
    """The group's error code and the committed offsets of ``topics`` (``None``: every
    partition with a committed offset); each partition carries the error too (OffsetFetch v0-1
    have no other place for it)."""
    error = kafka_code(await ctx.broker.groups.ensure_coordinator(group_id))
    if error != ErrorCode.none:
        committed = {}
        wanted = [] if topics is None else [
            TopicPartition(t.name, p) for t in topics for p in t.partition_indexes
        ]
    elif topics is None:
        committed = ctx.broker.groups.fetch_offsets(group_id, None)
        wanted = sorted(committed)
    else:
        wanted = [TopicPartition(t.name, p) for t in topics for p in t.partition_indexes]
        committed = ctx.broker.groups.fetch_offsets(group_id, wanted)
    by_topic: dict[str, list[Any]] = {}
    partition_class = "OffsetFetchResponsePartitions" if batched else "OffsetFetchResponsePartition"
    for tp in wanted:
        found = committed.get(tp)
        by_topic.setdefault(tp.topic, []).append(
            build(
                partition_class,
                partition_index=tp.partition,
                committed_offset=found.offset if found is not None else -1,
                committed_leader_epoch=found.leader_epoch if found is not None else -1,
                metadata=found.metadata if found is not None else "",
                error_code=error,
            )
        )
    topic_class = "OffsetFetchResponseTopics" if batched else "OffsetFetchResponseTopic"
    return error, tuple(
        build(topic_class, name=name, partitions=tuple(parts)) for name, parts in by_topic.items()
    )


async def offset_fetch(ctx: KafkaContext, request: KafkaRequest) -> Any:
    body = request.body
    build = builder(request.api_key, request.api_version)
    if has_field(body, "groups"):
        groups = []
        for g in body.groups:
            error, fetched = await _fetched_topics(ctx, build, g.group_id, g.topics, batched=True)
            groups.append(
                build(
                    "OffsetFetchResponseGroup",
                    group_id=g.group_id,
                    topics=fetched,
                    error_code=error,
                )
            )
        return build("OffsetFetchResponse", throttle_time=NO_THROTTLE, groups=tuple(groups))
    topics = body.topics if has_field(body, "topics") else None
    error, fetched = await _fetched_topics(ctx, build, body.group_id, topics, batched=False)
    return build(
        "OffsetFetchResponse",
        throttle_time=NO_THROTTLE,
        topics=fetched,
        error_code=error,
    )


async def offset_delete(ctx: KafkaContext, request: KafkaRequest) -> Any:
    body = request.body
    build = builder(request.api_key, request.api_version)
    wanted = [TopicPartition(t.name, p.partition_index) for t in body.topics for p in t.partitions]
    error, errors = await ctx.broker.groups.delete_offsets(body.group_id, wanted)
    topics = tuple(
        build(
            "OffsetDeleteResponseTopic",
            name=t.name,
            partitions=tuple(
                build(
                    "OffsetDeleteResponsePartition",
                    partition_index=p.partition_index,
                    error_code=kafka_code(errors.get(TopicPartition(t.name, p.partition_index), 0)),
                )
                for p in t.partitions
            ),
        )
        for t in body.topics
    )
    return build(
        "OffsetDeleteResponse",
        throttle_time=NO_THROTTLE,
        error_code=kafka_code(error),
        topics=topics,
    )
