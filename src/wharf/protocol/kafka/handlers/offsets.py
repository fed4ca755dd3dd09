"""ListOffsets (earliest -2, latest -1, by timestamp) and DeleteRecords."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from wharf.protocol.kafka.codec import KafkaRequest
from wharf.protocol.kafka.context import KafkaContext
from wharf.protocol.kafka.errors import SERVED_ERRORS, error_code_for
from wharf.protocol.kafka.responses import NO_THROTTLE, builder

__all__ = ["delete_records", "list_offsets"]


async def _reload_if_missing(ctx: KafkaContext, wanted: Any) -> None:
    """Re-read the catalogue once when a requested partition is not known (in a cluster,
    another node may just have created it)."""
    topics = ctx.broker.topics
    if any(
        not topics.partition_exists(topic.name, p.partition_index)
        for topic in wanted
        for p in topic.partitions
    ):
        await topics.reload()


async def list_offsets(ctx: KafkaContext, request: KafkaRequest) -> Any:
    build = builder(request.api_key, request.api_version)
    topics = []
    await _reload_if_missing(ctx, request.body.topics)
    for topic in request.body.topics:
        parts = []
        for p in topic.partitions:
            error, offset, timestamp = ErrorCode.none, -1, -1
            try:
                partition = ctx.broker.topics.partition(topic.name, p.partition_index)
                offset, timestamp = await partition.find_offset(p.timestamp)
            except SERVED_ERRORS as exc:  # reported as this partition's error code
                error = error_code_for(exc)
            parts.append(
                build(
                    "ListOffsetsPartitionResponse",
                    partition_index=p.partition_index,
                    error_code=error,
                    timestamp=timestamp,
                    offset=offset,
                    leader_epoch=0 if error == ErrorCode.none else -1,
                )
            )
        topics.append(build("ListOffsetsTopicResponse", name=topic.name, partitions=tuple(parts)))
    return build("ListOffsetsResponse", throttle_time=NO_THROTTLE, topics=tuple(topics))


async def delete_records(ctx: KafkaContext, request: KafkaRequest) -> Any:
    build = builder(request.api_key, request.api_version)
    topics = []
    await _reload_if_missing(ctx, request.body.topics)
    for topic in request.body.topics:
        parts = []
        for p in topic.partitions:
            error, low = ErrorCode.none, -1
            try:
                partition = ctx.broker.topics.partition(topic.name, p.partition_index)
                # -1 means "up to the high watermark" (delete everything).
                low = await partition.delete_records(p.offset)
            except SERVED_ERRORS as exc:  # reported as this partition's error code
                error = error_code_for(exc)
            parts.append(
                build(
                    "DeleteRecordsPartitionResult",
                    partition_index=p.partition_index,
                    low_watermark=low,
                    error_code=error,
                )
            )
        topics.append(build("DeleteRecordsTopicResult", name=topic.name, partitions=tuple(parts)))
    return build("DeleteRecordsResponse", throttle_time=NO_THROTTLE, topics=tuple(topics))
