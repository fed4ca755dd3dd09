"""Partitions of a cluster across two brokers: records produced on one node are fetched on the
other, long polls wake on the other node's commits, offsets are listed from the index, and the
writer's statuses and errors come back as the local partition's."""

from __future__ import annotations

import asyncio

import pytest

from wharf.cluster.nodes import LeaseLostError
from wharf.core.broker import Broker
from wharf.core.streams.errors import ErrorCode, ProducerStateError, StreamsError
from wharf.errors import BatchTooLargeError, OffsetOutOfRangeError
from wharf.storage.record_batch import RecordInput, build_batch

BOUND_S = 30.0


def idempotent_batch(pid: int, epoch: int, sequence: int, values: list[bytes]) -> bytes:
    return build_batch(
        [RecordInput(None, v) for v in values],
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=sequence,
        now_ms=1_700_000_000_000,
    )


async def test_records_produced_on_one_node_are_fetched_on_the_other(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.create_topic("orders", 2)
    await two.topics.reload()
    for i in range(5):
        assert await one.produce("orders", b"v%d" % i, partition=1) == (1, i)
    records = await two.fetch("orders", 1, 0)
    assert [(r.offset, r.value) for r in records] == [(i, b"v%d" % i) for i in range(5)]
    assert [r.value for r in await two.fetch("orders", 1, 3)] == [b"v3", b"v4"]
    part = two.topics.partition("orders", 1)
    assert (part.log_start_offset, part.high_watermark) == (0, 5)
    assert await part.fetch(5, 1024) == b""  # at the high watermark: nothing yet
    with pytest.raises(OffsetOutOfRangeError):
        await part.fetch(6, 1024)
    assert await part.find_offset(-1) == (5, -1)
    assert await part.find_offset(-2) == (0, -1)
    assert await two.fetch("orders", 0, 0) == []


async def test_a_long_poll_on_one_node_wakes_on_the_other_nodes_commit(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.create_topic("tail", 1)
    await two.topics.reload()
    waiting = asyncio.create_task(two.fetch("tail", 0, 0, timeout_s=BOUND_S))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    await one.produce("tail", b"first")
    records = await asyncio.wait_for(waiting, BOUND_S)
    assert [r.value for r in records] == [b"first"]
    assert not await two.topics.partition("tail", 0).wait_for_data(1, 0.05)


async def test_idempotent_appends_are_checked_across_nodes(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.create_topic("idem", 1)
    await two.topics.reload()
    pid, epoch = await one.init_producer_id()
    first = idempotent_batch(pid, epoch, 0, [b"a", b"b"])
    on_one = one.topics.partition("idem", 0)
    on_two = two.topics.partition("idem", 0)
    appended = await on_one.append(first)
    assert (appended.base_offset, appended.last_offset, appended.duplicate) == (0, 1, False)
    retried = await on_two.append(first)  # the retry went to the other node
    assert (retried.base_offset, retried.last_offset, retried.duplicate) == (0, 1, True)
    with pytest.raises(ProducerStateError) as mixed:  # a retry sent along with a new batch
        await on_two.append(first + idempotent_batch(pid, epoch, 2, [b"c"]))
    assert mixed.value.code is ErrorCode.DUPLICATE_SEQUENCE_NUMBER
    with pytest.raises(ProducerStateError) as gap:
        await on_two.append(idempotent_batch(pid, epoch, 5, [b"c"]))
    assert gap.value.code is ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER
    bumped = await two.init_producer_id(pid, epoch)
    await on_two.append(idempotent_batch(pid, bumped[1], 0, [b"c"]))
    with pytest.raises(ProducerStateError) as fenced:
        await on_one.append(idempotent_batch(pid, epoch, 2, [b"d"]))
    assert fenced.value.code is ErrorCode.INVALID_PRODUCER_EPOCH
    assert [r.value for r in await one.fetch("idem", 0, 0)] == [b"a", b"b", b"c"]


async def test_log_append_time_and_batch_limits_are_the_topics(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.create_topic(
        "stamped", 1, {"message.timestamp.type": "LogAppendTime", "max.message.bytes": "2000"}
    )
    await two.topics.reload()
    before = one.clock.now_ms()
    result = await one.topics.partition("stamped", 0).append(
        build_batch([RecordInput(None, b"x")], now_ms=1)
    )
    assert result.log_append_time_ms >= before
    [record] = await two.fetch("stamped", 0, 0)
    assert record.timestamp_ms == result.log_append_time_ms
    with pytest.raises(BatchTooLargeError):
        await one.topics.partition("stamped", 0).append(
            build_batch([RecordInput(None, b"y" * 5000)], now_ms=1)
        )


async def test_a_node_without_its_lease_answers_not_leader(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.create_topic("fenced", 1)
    assert two.cluster is not None
    await two.cluster.membership.deregister()  # its lease is gone: nothing may be written
    await two.topics.reload()
    with pytest.raises(StreamsError) as refused:
        await two.topics.partition("fenced", 0).append(build_batch([RecordInput(None, b"z")]))
    assert refused.value.code is ErrorCode.NOT_LEADER_OR_FOLLOWER
    assert not isinstance(refused.value, LeaseLostError)
    with pytest.raises(StreamsError) as admin:
        await two.create_topic("other", 1)
    assert admin.value.code is ErrorCode.NOT_CONTROLLER
    assert await one.fetch("fenced", 0, 0) == []
