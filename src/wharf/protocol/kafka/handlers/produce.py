"""Produce and InitProducerId.

Produce hands each partition's ``records`` bytes to the core untouched: the core validates the
batch headers and CRC, checks idempotent-producer sequences, assigns offsets in place and
appends (see docs/architecture.md); nothing here decodes records. With ``acks=0`` no response
is sent; with ``acks=1`` or ``acks=-1`` the response waits for the core's append, which under
the default fsync policy includes the group-committed fsync (Wharf is a single replica, so
``1`` and ``all`` mean the same).

Partitions of one request are appended in request order before any of them waits for its
fsync, so one fsync covers the whole request (and other requests arriving meanwhile).
"""

from __future__ import annotations

import asyncio
import datetime
from typing import Any

from kio.schema.errors import ErrorCode

from wharf.protocol.kafka.codec import KafkaRequest
from wharf.protocol.kafka.context import KafkaContext
from wharf.protocol.kafka.errors import SERVED_ERRORS, error_code_for
from wharf.protocol.kafka.handlers.metadata import ensure_topic
from wharf.protocol.kafka.responses import NO_THROTTLE, builder

__all__ = ["init_producer_id", "produce"]

VALID_ACKS = (-1, 0, 1)


async def _append_one(
    ctx: KafkaContext, topic: str, index: int, records: bytes | None, acks: int
) -> tuple[ErrorCode, int, int, int]:
    """(error, base offset, log start offset, log append time or -1) for one partition."""
    if acks not in VALID_ACKS:
        return ErrorCode.invalid_required_acks, -1, -1, -1
    error = await ensure_topic(ctx, topic, allow_create=True)
    if error != ErrorCode.none:
        return error, -1, -1, -1
    if records is None:
        return ErrorCode.corrupt_message, -1, -1, -1
    topics = ctx.broker.topics
    try:
        if not topics.partition_exists(topic, index):
            await topics.reload()  # in a cluster, partitions another node just added
        result = await topics.partition(topic, index).append(records, acks=acks)
    except SERVED_ERRORS as exc:  # reported as this partition's error code
        return error_code_for(exc), -1, -1, -1
    return ErrorCode.none, result.base_offset, result.log_start_offset, result.log_append_time_ms


async def produce(ctx: KafkaContext, request: KafkaRequest) -> Any:
    body = request.body
    acks = body.acks
    jobs = [
        (topic.name, part.index, _append_one(ctx, topic.name, part.index, part.records, acks))
        for topic in body.topic_data
        for part in topic.partition_data
    ]
    if len(jobs) == 1:
        outcomes = [await jobs[0][2]]
    else:
        outcomes = await asyncio.gather(*(job for _, _, job in jobs))
    if acks == 0:
        return None
    build = builder(request.api_key, request.api_version)
    by_topic: dict[str, list[Any]] = {}
    for (topic, index, _), outcome in zip(jobs, outcomes, strict=True):
        error, base_offset, start_offset, append_time = outcome
        by_topic.setdefault(topic, []).append(
            build(
                "PartitionProduceResponse",
                index=index,
                error_code=error,
                base_offset=base_offset,
                # None (-1 on the wire) for CreateTime topics: the producer's timestamps stand
                log_append_time=(
                    None if append_time < 0
                    else datetime.datetime.fromtimestamp(append_time / 1000, datetime.UTC)
                ),
                log_start_offset=start_offset,
                record_errors=(),
                error_message=None,
            )
        )
    return build(
        "ProduceResponse",
        throttle_time=NO_THROTTLE,
        responses=tuple(
            build("TopicProduceResponse", name=name, partition_responses=tuple(parts))
            for name, parts in by_topic.items()
        ),
    )


async def init_producer_id(ctx: KafkaContext, request: KafkaRequest) -> Any:
    body = request.body
    build = builder(request.api_key, request.api_version)
    if body.transactional_id is not None:
        # Transactions are not served; idempotent producers send no transactional id.
        return build(
            "InitProducerIdResponse",
            throttle_time=NO_THROTTLE,
            error_code=ErrorCode.transactional_id_authorization_failed,
            producer_id=-1,
            producer_epoch=-1,
        )
    producer_id = getattr(body, "producer_id", -1)
    epoch = getattr(body, "producer_epoch", -1)
    try:
        # v3+: a producer re-initialising its own id (after a fatal error) gets its next epoch,
        # provided the broker issued that id.
        producer_id, epoch = await ctx.broker.init_producer_id(producer_id, epoch)
    except SERVED_ERRORS as exc:
        return build(
            "InitProducerIdResponse",
            throttle_time=NO_THROTTLE,
            error_code=error_code_for(exc),
            producer_id=-1,
            producer_epoch=-1,
        )
    return build(
        "InitProducerIdResponse",
        throttle_time=NO_THROTTLE,
        error_code=ErrorCode.none,
        producer_id=producer_id,
        producer_epoch=epoch,
    )
