"""confluent-kafka 2.16.1 (librdkafka) against ``wharf serve``.

Also the compression matrix: librdkafka produces with every codec (gzip, snappy, lz4, zstd),
Wharf stores the batches as they came, and each Python client decompresses what it fetches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as AioTopicPartition
from confluent_kafka import (
    TIMESTAMP_LOG_APPEND_TIME,
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ConfigSource,
    NewPartitions,
    NewTopic,
    OffsetSpec,
)
from kafka import KafkaConsumer
from kafka import TopicPartition as KpTopicPartition

from helpers.broker_process import WharfProcess

pytestmark = pytest.mark.interop

CODECS = ["gzip", "snappy", "lz4", "zstd"]


def produce(
    bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes | None]], **conf: object
) -> list[int]:
    offsets: list[int] = []
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, msg: object) -> None:
        if err is not None:
            errors.append(err)
        else:
            offsets.append(msg.offset())  # type: ignore[attr-defined]

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, **conf})
    for key, value in messages:
        producer.produce(topic, key=key, value=value, partition=0, on_delivery=delivered)
    assert producer.flush(30) == 0
    assert errors == []
    return offsets


def consume(bootstrap: str, topic: str, count: int, **conf: object) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"reader-{topic}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            **conf,
        }
    )
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        got = []
        deadline = time.monotonic() + 30
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            got.append(msg)
        return got
    finally:
        consumer.close()


def test_round_trip_idempotent(bootstrap: str, topic_name: str) -> None:
    messages = [(b"k%d" % i, b"v%d" % i) for i in range(100)] + [(b"null", None)]
    offsets = produce(bootstrap, topic_name, messages, **{"enable.idempotence": True})
    assert sorted(offsets) == list(range(101))
    got = consume(bootstrap, topic_name, 101)
    assert [(m.key(), m.value()) for m in got] == messages
    assert [m.offset() for m in got] == list(range(101))


def test_headers_and_timestamps(bootstrap: str, topic_name: str) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(
        topic_name, value=b"v", headers=[("a", b"1"), ("b", None)], timestamp=1_700_000_000_123
    )
    assert producer.flush(30) == 0
    [msg] = consume(bootstrap, topic_name, 1)
    assert msg.headers() == [("a", b"1"), ("b", None)]
    assert msg.timestamp()[1] == 1_700_000_000_123


@pytest.mark.parametrize("codec", CODECS)
def test_compressed_batches_consumed_by_every_client(
    bootstrap: str, topic_name: str, codec: str
) -> None:
    messages = [(b"k%d" % i, (b"payload-%d " % i) * 20) for i in range(50)]
    produce(bootstrap, topic_name, messages, **{"compression.type": codec, "linger.ms": 50})
    expected = [value for _, value in messages]

    assert [m.value() for m in consume(bootstrap, topic_name, 50)] == expected

    kp = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    try:
        kp.assign([KpTopicPartition(topic_name, 0)])
        values: list[bytes] = []
        deadline = time.monotonic() + 30
        while len(values) < 50 and time.monotonic() < deadline:
            for batch in kp.poll(timeout_ms=500).values():
                values.extend(r.value for r in batch)
    finally:
        kp.close()
    assert values == expected

    async def aio() -> list[bytes]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        await consumer.start()
        try:
            consumer.assign([AioTopicPartition(topic_name, 0)])
            out: list[bytes] = []
            async with asyncio.timeout(30):
                while len(out) < 50:
                    for batch in (await consumer.getmany(timeout_ms=500)).values():
                        out.extend(r.value for r in batch)
            return out
        finally:
            await consumer.stop()

    assert asyncio.run(aio()) == expected


def test_admin_api(bootstrap: str, topic_name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics(
        [
            NewTopic(
                topic_name,
                num_partitions=2,
                replication_factor=1,
                config={"cleanup.policy": "delete"},
            )
        ]
    )
    futures[topic_name].result(30)
    metadata = admin.list_topics(timeout=30)
    assert len(metadata.topics[topic_name].partitions) == 2

    validate = admin.create_topics([NewTopic(topic_name + "-v", 1, 1)], validate_only=True)
    validate[topic_name + "-v"].result(30)
    assert topic_name + "-v" not in admin.list_topics(timeout=30).topics

    admin.create_partitions([NewPartitions(topic_name, 4)])[topic_name].result(30)
    assert len(admin.list_topics(timeout=30).topics[topic_name].partitions) == 4

    resource = ConfigResource(
        ConfigResource.Type.TOPIC,
        topic_name,
        incremental_configs=[
            ConfigEntry("retention.ms", "123456", incremental_operation=AlterConfigOpType.SET),
            ConfigEntry(
                "max.message.bytes", "2000000", incremental_operation=AlterConfigOpType.SET
            ),
        ],
    )
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(30)
    described = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic_name)])
    [entries] = [f.result(30) for f in described.values()]
    assert entries["retention.ms"].value == "123456"
    assert entries["max.message.bytes"].value == "2000000"
    assert entries["cleanup.policy"].value == "delete"

    cluster = admin.describe_cluster().result(30)
    assert cluster.controller.id == 0

    for future in admin.delete_topics([topic_name]).values():
        future.result(30)
    assert topic_name not in admin.list_topics(timeout=30).topics


def test_the_broker_configs_are_described_read_only_from_its_settings(bootstrap: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    described = admin.describe_configs([ConfigResource(ConfigResource.Type.BROKER, "0")])
    [entries] = [f.result(30) for f in described.values()]
    assert entries["broker.id"].value == "0"
    assert entries["default.replication.factor"].value == "1"
    assert entries["message.max.bytes"].value == "1048588"
    partitions = entries["num.partitions"]
    assert partitions.source == ConfigSource.STATIC_BROKER_CONFIG.value
    assert partitions.is_read_only and not partitions.is_default
    assert int(partitions.value) >= 1


def test_batch_above_topic_max_message_bytes_is_refused(bootstrap: str, topic_name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic_name, 1, 1, config={"max.message.bytes": "2000"})])[
        topic_name
    ].result(30)
    errors: list[KafkaError] = []

    def delivered(err: KafkaError | None, msg: object) -> None:
        if err is not None:
            errors.append(err)

    producer = Producer({"bootstrap.servers": bootstrap, "retries": 0})
    producer.produce(topic_name, value=b"x" * 5000, partition=0, on_delivery=delivered)
    producer.flush(30)
    assert [e.code() for e in errors] == [KafkaError.MSG_SIZE_TOO_LARGE]
    # Smaller records still go through.
    assert produce(bootstrap, topic_name, [(None, b"small")]) == [0]


def test_incremental_append_and_subtract_on_cleanup_policy(bootstrap: str, topic_name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic_name, 1, 1)])[topic_name].result(30)

    def alter(*entries: ConfigEntry) -> None:
        resource = ConfigResource(
            ConfigResource.Type.TOPIC, topic_name, incremental_configs=list(entries)
        )
        for future in admin.incremental_alter_configs([resource]).values():
            future.result(30)

    def policy() -> str:
        described = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic_name)])
        [entries] = [f.result(30) for f in described.values()]
        return str(entries["cleanup.policy"].value)

    alter(ConfigEntry("cleanup.policy", "compact", incremental_operation=AlterConfigOpType.APPEND))
    assert policy() == "delete,compact"
    alter(ConfigEntry("cleanup.policy", "delete", incremental_operation=AlterConfigOpType.SUBTRACT))
    assert policy() == "compact"
    with pytest.raises(KafkaException) as info:
        alter(ConfigEntry("retention.ms", "5", incremental_operation=AlterConfigOpType.APPEND))
    assert info.value.args[0].code() == KafkaError.INVALID_CONFIG


def test_log_append_time_topic_stamps_batches_with_the_broker_clock(
    bootstrap: str, topic_name: str
) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    refused = admin.create_topics(
        [NewTopic(topic_name + "-bad", 1, 1, config={"message.timestamp.type": "WallTime"})]
    )[topic_name + "-bad"]
    with pytest.raises(KafkaException) as bad:
        refused.result(30)
    assert bad.value.args[0].code() == KafkaError.INVALID_CONFIG
    admin.create_topics(
        [NewTopic(topic_name, 1, 1, config={"message.timestamp.type": "LogAppendTime"})]
    )[topic_name].result(30)

    reports: list[tuple[KafkaError | None, tuple[int, int]]] = []
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    before = int(time.time() * 1000)
    for i in range(3):
        producer.produce(
            topic_name,
            value=b"v%d" % i,
            partition=0,
            timestamp=1_000,  # the producer's CreateTime, which the topic overrides
            on_delivery=lambda err, msg: reports.append((err, msg.timestamp())),
        )
    assert producer.flush(30) == 0
    after = int(time.time() * 1000)
    # The produce response carries the append time into the delivery reports...
    assert [err for err, _ in reports] == [None] * 3
    for _, (kind, stamp) in reports:
        assert kind == TIMESTAMP_LOG_APPEND_TIME and before <= stamp <= after
    # ...and the stored batches carry it to every consumer.
    got = consume(bootstrap, topic_name, 3)
    assert [m.value() for m in got] == [b"v0", b"v1", b"v2"]
    for msg in got:
        kind, stamp = msg.timestamp()
        assert kind == TIMESTAMP_LOG_APPEND_TIME and before <= stamp <= after
    reader = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        reader.assign([KpTopicPartition(topic_name, 0)])
        reader.seek(KpTopicPartition(topic_name, 0), 0)
        polled = reader.poll(timeout_ms=10_000, max_records=3)
        records = [r for batch in polled.values() for r in batch]
    finally:
        reader.close()
    assert len(records) == 3
    for record in records:
        assert record.timestamp_type == 1 and before <= record.timestamp <= after


def test_idle_connections_are_closed_and_librdkafka_reconnects(
    start_wharf: Callable[..., WharfProcess],
) -> None:
    server = start_wharf(env={"WHARF_KAFKA_CONNECTIONS_MAX_IDLE_MS": "500"})
    assert produce(server.kafka_bootstrap, "idle-topic", [(None, b"before")]) == [0]
    producer = Producer({"bootstrap.servers": server.kafka_bootstrap, "linger.ms": 5})
    delivered: list[int] = []
    producer.produce("idle-topic", value=b"first", partition=0,
                     on_delivery=lambda err, msg: delivered.append(msg.offset()))
    assert producer.flush(30) == 0
    server.wait_for_log(r"idle for more than 500 ms")
    time.sleep(1.0)  # past the limit again: librdkafka's connections are gone
    producer.produce("idle-topic", value=b"after", partition=0,
                     on_delivery=lambda err, msg: delivered.append(msg.offset()))
    assert producer.flush(30) == 0
    assert delivered == [1, 2]
    assert [m.value() for m in consume(server.kafka_bootstrap, "idle-topic", 3)] == [
        b"before", b"first", b"after"
    ]


def test_list_offsets_by_every_spec_including_max_timestamp(
    bootstrap: str, topic_name: str
) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic_name, 1, 1)])[topic_name].result(30)
    producer = Producer({"bootstrap.servers": bootstrap})
    for stamp in (5_000, 9_000, 7_000, 9_000, 1_000):  # one batch each
        producer.produce(topic_name, value=b"%d" % stamp, partition=0, timestamp=stamp)
        assert producer.flush(30) == 0
    tp = TopicPartition(topic_name, 0)

    def listed(spec: OffsetSpec) -> tuple[int, int]:
        info = admin.list_offsets({tp: spec})[tp].result(30)
        return info.offset, info.timestamp

    # The first record with the largest timestamp (ListOffsets v7, timestamp -3).
    assert listed(OffsetSpec.max_timestamp()) == (1, 9_000)
    assert listed(OffsetSpec.earliest())[0] == 0
    assert listed(OffsetSpec.latest())[0] == 5
    assert listed(OffsetSpec.for_timestamp(6_000)) == (1, 9_000)
    assert listed(OffsetSpec.for_timestamp(9_001))[0] == -1
