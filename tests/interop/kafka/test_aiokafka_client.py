"""aiokafka 0.14 against ``wharf serve``: produce (idempotent), consume, groups, admin."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

pytestmark = pytest.mark.interop


async def test_round_trip_idempotent(bootstrap: str, topic_name: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=True)
    await producer.start()
    try:
        sent = [
            (b"k1", b"v1", [("h", b"1")], 1_700_000_000_001),
            (b"tombstone", None, [], 1_700_000_000_002),
            (b"k3", b"v" * 5000, [("x", b""), ("y", b"z")], 1_700_000_000_003),
        ]
        offsets = []
        for key, value, headers, ts in sent:
            meta = await producer.send_and_wait(
                topic_name, value=value, key=key, headers=headers, timestamp_ms=ts, partition=0
            )
            offsets.append(meta.offset)
    finally:
        await producer.stop()
    assert offsets == [0, 1, 2]

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic_name, 0)])
        got = []
        async with asyncio.timeout(30):
            while len(got) < 3:
                for batch in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(batch)
    finally:
        await consumer.stop()
    assert [(r.key, r.value, list(r.headers), r.timestamp) for r in got] == [
        (k, v, h, ts) for k, v, h, ts in sent
    ]


async def test_group_consume_and_commit(bootstrap: str, topic_name: str, group_name: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for i in range(20):
            await producer.send(topic_name, value=b"%d" % i)
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic_name,
        bootstrap_servers=bootstrap,
        group_id=group_name,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    try:
        values = []
        async with asyncio.timeout(30):
            async for record in consumer:
                values.append(record.value)
                if len(values) == 20:
                    break
        await consumer.commit()
        committed = await consumer.committed(TopicPartition(topic_name, 0))
    finally:
        await consumer.stop()
    assert values == [b"%d" % i for i in range(20)]
    assert committed == 20


async def test_admin_create_describe_delete(bootstrap: str, topic_name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic_name, num_partitions=3, replication_factor=1)])
        assert topic_name in await admin.list_topics()
        await admin.delete_topics([topic_name])
        assert topic_name not in await admin.list_topics()
    finally:
        await admin.close()
