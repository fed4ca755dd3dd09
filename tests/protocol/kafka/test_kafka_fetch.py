"""Fetch and ListOffsets handlers against an embedded broker: limits, positions, long polls."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kio.schema.errors import ErrorCode
from kio.schema.fetch.v12 import request as fetch_v12
from kio.schema.list_offsets.v6 import request as list_offsets_v6

from wharf.core.broker import Broker
from wharf.protocol.kafka.codec import KafkaRequest
from wharf.protocol.kafka.context import KafkaContext
from wharf.protocol.kafka.handlers import handle
from wharf.storage.record_batch import RecordInput, build_batch, iter_batches


@pytest.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[KafkaContext]:
    async with Broker.open(tmp_path / "data") as broker:
        await broker.topics.create("a", 1)
        await broker.topics.create("b", 1)
        yield KafkaContext(broker=broker, advertised_host="127.0.0.1", advertised_port=9092)


async def append(ctx: KafkaContext, topic: str, values: list[bytes], ts: int = 1_000) -> None:
    batch = build_batch([RecordInput(None, v, (), ts) for v in values])
    await ctx.broker.topics.partition(topic, 0).append(batch)


def fetch_request(
    positions: list[tuple[str, int, int]],
    *,
    max_wait_ms: int = 0,
    min_bytes: int = 1,
    max_bytes: int = 1 << 20,
) -> KafkaRequest:
    topics = tuple(
        fetch_v12.FetchTopic(
            topic=topic,
            partitions=(
                fetch_v12.FetchPartition(
                    partition=0, fetch_offset=offset, partition_max_bytes=limit
                ),
            ),
        )
        for topic, offset, limit in positions
    )
    body = fetch_v12.FetchRequest(
        max_wait=datetime.timedelta(milliseconds=max_wait_ms),
        min_bytes=min_bytes,
        max_bytes=max_bytes,
        topics=topics,
        forgotten_topics_data=(),
    )
    return KafkaRequest(1, 12, 1, "test", body, 0)


def parts(response: Any) -> dict[str, Any]:
    return {t.topic: t.partitions[0] for t in response.responses}


def base_offsets(records: bytes) -> list[int]:
    return [header.base_offset for _, header in iter_batches(records, max_batch_bytes=len(records))]


async def test_offset_inside_a_batch_returns_that_whole_batch(ctx: KafkaContext) -> None:
    await append(ctx, "a", [b"0", b"1", b"2"])
    await append(ctx, "a", [b"3"])
    part = parts(await handle(ctx, fetch_request([("a", 1, 1 << 20)])))["a"]
    assert part.error_code == ErrorCode.none
    assert part.high_watermark == 4
    assert base_offsets(part.records) == [0, 3]


async def test_offset_past_the_end_is_out_of_range(ctx: KafkaContext) -> None:
    await append(ctx, "a", [b"0"])
    part = parts(await handle(ctx, fetch_request([("a", 5, 1 << 20)])))["a"]
    assert part.error_code == ErrorCode.offset_out_of_range


async def test_partition_limit_still_returns_one_whole_batch(ctx: KafkaContext) -> None:
    await append(ctx, "a", [b"x" * 500])
    await append(ctx, "a", [b"y" * 500])
    part = parts(await handle(ctx, fetch_request([("a", 0, 10)])))["a"]
    assert base_offsets(part.records) == [0]


async def test_request_limit_spans_partitions(ctx: KafkaContext) -> None:
    await append(ctx, "a", [b"x" * 2000])
    await append(ctx, "b", [b"y" * 2000])
    got = parts(
        await handle(ctx, fetch_request([("a", 0, 1 << 20), ("b", 0, 1 << 20)], max_bytes=100))
    )
    assert base_offsets(got["a"].records) == [0]  # the first batch comes even above the limit
    assert got["b"].records in (b"", None)  # nothing left for the second partition
    assert got["b"].error_code == ErrorCode.none


async def test_long_poll_returns_when_data_arrives(ctx: KafkaContext) -> None:
    waiting = asyncio.ensure_future(
        handle(ctx, fetch_request([("a", 0, 1 << 20)], max_wait_ms=60_000))
    )
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await append(ctx, "a", [b"late"])
    response = await asyncio.wait_for(waiting, 10)
    assert base_offsets(parts(response)["a"].records) == [0]


async def test_long_poll_waits_for_min_bytes(ctx: KafkaContext) -> None:
    request = fetch_request([("a", 0, 1 << 20)], max_wait_ms=60_000, min_bytes=300)
    waiting = asyncio.ensure_future(handle(ctx, request))
    await append(ctx, "a", [b"small"])
    await asyncio.sleep(0.05)
    assert not waiting.done()  # one small batch is below min_bytes
    await append(ctx, "a", [b"z" * 400])
    response = await asyncio.wait_for(waiting, 10)
    assert base_offsets(parts(response)["a"].records) == [0, 1]


async def test_long_poll_times_out_empty(ctx: KafkaContext) -> None:
    response = await asyncio.wait_for(
        handle(ctx, fetch_request([("a", 0, 1 << 20)], max_wait_ms=50)), 10
    )
    part = parts(response)["a"]
    assert part.error_code == ErrorCode.none
    assert part.records in (b"", None)


async def test_list_offsets_earliest_latest_and_by_timestamp(ctx: KafkaContext) -> None:
    await append(ctx, "a", [b"0", b"1"], ts=1_000)
    await append(ctx, "a", [b"2"], ts=2_000)

    async def lookup(timestamp: int) -> tuple[int, int]:
        body = list_offsets_v6.ListOffsetsRequest(
            replica_id=-1,
            isolation_level=0,
            topics=(
                list_offsets_v6.ListOffsetsTopic(
                    name="a",
                    partitions=(
                        list_offsets_v6.ListOffsetsPartition(
                            partition_index=0, timestamp=timestamp
                        ),
                    ),
                ),
            ),
        )
        response = await handle(ctx, KafkaRequest(2, 6, 1, "test", body, 0))
        part = response.topics[0].partitions[0]
        assert part.error_code == ErrorCode.none
        return part.offset, part.timestamp

    assert (await lookup(-2))[0] == 0
    assert (await lookup(-1))[0] == 3
    assert await lookup(1_500) == (2, 2_000)
    assert await lookup(9_999) == (-1, -1)


async def test_an_error_on_one_partition_is_answered_without_waiting(ctx: KafkaContext) -> None:
    request = fetch_request([("a", 0, 1 << 20), ("missing", 0, 1 << 20)], max_wait_ms=60_000)
    response = await asyncio.wait_for(handle(ctx, request), 10)
    got = parts(response)
    assert got["missing"].error_code == ErrorCode.unknown_topic_or_partition
    assert got["a"].error_code == ErrorCode.none
