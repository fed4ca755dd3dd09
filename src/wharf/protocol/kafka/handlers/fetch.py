"""Fetch: serve stored batches, waiting for data when the client asks to (long poll).

For each requested partition the core returns whole stored batches starting with the one that
holds ``fetch_offset`` (a client may ask for an offset in the middle of a batch; it skips the
records before it), at least one batch even when it exceeds the limits, otherwise within
``partition_max_bytes`` and the request's ``max_bytes`` overall. The bytes are served exactly
as stored: never decoded or re-encoded.

When less than ``min_bytes`` is available and no partition has an error, the handler waits, up
to ``max_wait``, for the first append to any requested partition (core events, no polling),
then reads again. Fetch sessions
(KIP-227) are not kept: every response carries session id 0, so clients send full requests.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from kio.schema.errors import ErrorCode

from wharf.core.streams.errors import StreamsError
from wharf.core.streams.view import PartitionView
from wharf.protocol.kafka.codec import KafkaRequest
from wharf.protocol.kafka.context import KafkaContext
from wharf.protocol.kafka.errors import SERVED_ERRORS, error_code_for
from wharf.protocol.kafka.responses import NO_THROTTLE, builder

__all__ = ["fetch"]


@dataclass(slots=True)
class _Slot:
    topic: str
    index: int
    offset: int
    max_bytes: int
    partition: PartitionView | None
    error: ErrorCode = ErrorCode.none
    records: bytes | memoryview = b""
    high_watermark: int = -1
    log_start_offset: int = -1


async def _read(slots: list[_Slot], max_bytes: int) -> int:
    """Fill every slot from storage; returns the bytes gathered."""
    total = 0
    for slot in slots:
        slot.records = b""
        partition = slot.partition
        if partition is None:
            slot.error = ErrorCode.unknown_topic_or_partition
            continue
        # The first batch is always returned whole, so a large batch never blocks a consumer.
        budget = min(slot.max_bytes, max_bytes - total) if total else slot.max_bytes
        try:
            if budget > 0 or slot.offset < partition.log_start_offset:
                slot.records = await partition.fetch(slot.offset, max(budget, 1))
        except SERVED_ERRORS as exc:  # a failed read becomes this partition's error code
            slot.error = error_code_for(exc)
            continue
        finally:
            # after the read: a cluster partition learns its positions from it
            slot.high_watermark = partition.high_watermark
            slot.log_start_offset = partition.log_start_offset
        slot.error = ErrorCode.none
        total += len(slot.records)
    return total


async def _wait_for_data(ctx: KafkaContext, slots: list[_Slot], timeout_s: float) -> None:
    """Return when any requested partition grows past what the last read saw, or on timeout."""
    positions = [
        (slot.partition, max(slot.offset, slot.high_watermark))
        for slot in slots
        if slot.partition is not None and slot.error == ErrorCode.none
    ]
    if positions:
        await ctx.broker.topics.wait_for_any(positions, timeout_s)
    else:
        await asyncio.sleep(timeout_s)


def _find(ctx: KafkaContext, topic: str, index: int) -> PartitionView | None:
    try:
        return ctx.broker.topics.partition(topic, index)
    except StreamsError:
        return None


async def fetch(ctx: KafkaContext, request: KafkaRequest) -> Any:
    body = request.body
    slots = [
        _Slot(
            topic=topic.topic,
            index=p.partition,
            offset=p.fetch_offset,
            max_bytes=p.partition_max_bytes,
            partition=_find(ctx, topic.topic, p.partition),
        )
        for topic in body.topics
        for p in topic.partitions
    ]
    if any(slot.partition is None for slot in slots):
        await ctx.broker.topics.reload()  # a topic another node of a cluster just created
        for slot in slots:
            if slot.partition is None:
                slot.partition = _find(ctx, slot.topic, slot.index)
    max_bytes = body.max_bytes
    total = await _read(slots, max_bytes)
    wait_s = body.max_wait.total_seconds()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    # Wait only while nothing needs the client's attention: an error on any partition (unknown
    # topic, offset out of range) is answered at once, as Kafka does.
    while (
        total < body.min_bytes
        and not any(slot.error != ErrorCode.none for slot in slots)
        and (remaining := deadline - loop.time()) > 0
    ):
        await _wait_for_data(ctx, slots, remaining)
        total = await _read(slots, max_bytes)
    return _response(request, slots)


def _response(request: KafkaRequest, slots: list[_Slot]) -> Any:
    build = builder(request.api_key, request.api_version)
    by_topic: dict[str, list[Any]] = {}
    for slot in slots:
        by_topic.setdefault(slot.topic, []).append(
            build(
                "PartitionData",
                partition_index=slot.index,
                error_code=slot.error,
                high_watermark=slot.high_watermark,
                last_stable_offset=slot.high_watermark,
                log_start_offset=slot.log_start_offset,
                aborted_transactions=None,
                preferred_read_replica=-1,
                records=slot.records,
            )
        )
    return build(
        "FetchResponse",
        throttle_time=NO_THROTTLE,
        error_code=ErrorCode.none,
        session_id=0,
        responses=tuple(
            build("FetchableTopicResponse", topic=name, partitions=tuple(parts))
            for name, parts in by_topic.items()
        ),
    )
