"""A Kafka client against two brokers of one cluster, each with its own Kafka listener: a topic
created through one is produced to there (idempotently) and consumed through the other."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from wharf.core.broker import Broker
from wharf.server.kafka.listener import start_kafka_listener

BOUND_S = 30.0


@pytest.fixture
async def bootstraps(two_brokers: tuple[Broker, Broker]) -> AsyncIterator[tuple[str, str]]:
    one, two = two_brokers
    first = await start_kafka_listener(one, "127.0.0.1", 0)
    second = await start_kafka_listener(two, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"
    finally:
        await second.close(1.0)
        await first.close(1.0)


async def test_produce_through_one_node_and_consume_through_the_other(
    bootstraps: tuple[str, str],
) -> None:
    first, second = bootstraps
    admin = AIOKafkaAdminClient(bootstrap_servers=first)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("events", num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=first, enable_idempotence=True)
    await producer.start()
    try:
        sent = [
            await producer.send_and_wait("events", b"v%d" % i, key=b"k", partition=1)
            for i in range(10)
        ]
    finally:
        await producer.stop()
    assert [m.offset for m in sent] == list(range(10))

    consumer = AIOKafkaConsumer(bootstrap_servers=second, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition("events", 1)])
        got = []
        async with asyncio.timeout(BOUND_S):
            while len(got) < 10:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(batch)
        end = await consumer.end_offsets([TopicPartition("events", 1)])
    finally:
        await consumer.stop()
    assert [(r.offset, r.key, r.value) for r in got] == [(i, b"k", b"v%d" % i) for i in range(10)]
    assert end == {TopicPartition("events", 1): 10}
