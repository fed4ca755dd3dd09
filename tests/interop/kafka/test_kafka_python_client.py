"""kafka-python 3.0.12 against ``wharf serve``: produce, consume, groups, admin."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType, NewPartitions, NewTopic

pytestmark = pytest.mark.interop


def consume_all(consumer: KafkaConsumer, count: int, timeout_s: float = 30.0) -> list:
    records: list = []
    deadline = time.monotonic() + timeout_s
    while len(records) < count and time.monotonic() < deadline:
        for batch in consumer.poll(timeout_ms=500).values():
            records.extend(batch)
    return records


def test_round_trip_keys_headers_null_values_timestamps(bootstrap: str, topic_name: str) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)  # idempotent by default
    try:
        sent = [
            (b"k1", b"v1", [("h", b"x")], 1_700_000_000_001),
            (None, b"no key", [], 1_700_000_000_002),
            (b"tombstone", None, [("a", b""), ("b", b"2")], 1_700_000_000_003),
        ]
        metas = [
            producer.send(topic_name, key=k, value=v, headers=h, timestamp_ms=ts, partition=0)
            for k, v, h, ts in sent
        ]
        producer.flush()
        offsets = [m.get(timeout=30).offset for m in metas]
    finally:
        producer.close()
    assert offsets == [0, 1, 2]
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    try:
        consumer.assign([TopicPartition(topic_name, 0)])
        records = consume_all(consumer, 3)
    finally:
        consumer.close()
    got = [(r.key, r.value, list(r.headers), r.timestamp, r.offset) for r in records]
    assert got == [(k, v, h, ts, i) for i, (k, v, h, ts) in enumerate(sent)]

    lookup = KafkaConsumer(bootstrap_servers=bootstrap)
    try:
        tp = TopicPartition(topic_name, 0)
        found = lookup.offsets_for_times({tp: 1_700_000_000_002})[tp]
        assert (found.offset, found.timestamp) == (1, 1_700_000_000_002)
    finally:
        lookup.close()


def test_group_commit_and_resume(bootstrap: str, topic_name: str, group_name: str) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap)
    try:
        for i in range(10):
            producer.send(topic_name, value=b"m%d" % i)
        producer.flush()
    finally:
        producer.close()

    def consumer() -> KafkaConsumer:
        return KafkaConsumer(
            topic_name,
            bootstrap_servers=bootstrap,
            group_id=group_name,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        )

    first = consumer()
    try:
        records = consume_all(first, 10)
        assert [r.value for r in records] == [b"m%d" % i for i in range(10)]
        first.commit({TopicPartition(topic_name, 0): _offset(6)})
    finally:
        first.close()
    second = consumer()
    try:
        resumed = consume_all(second, 4)
    finally:
        second.close()
    assert [r.value for r in resumed] == [b"m6", b"m7", b"m8", b"m9"]


def _offset(offset: int):  # noqa: ANN202 - kafka-python's OffsetAndMetadata signature varies
    from kafka.structs import OffsetAndMetadata

    try:
        return OffsetAndMetadata(offset, "", -1)
    except TypeError:
        return OffsetAndMetadata(offset, "")


def test_admin_calls(bootstrap: str, topic_name: str, group_name: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic_name, 2, 1, topic_configs={"retention.ms": "3600000"})])
        assert topic_name in admin.list_topics()
        described = admin.describe_topics([topic_name])
        assert len(described[0]["partitions"]) == 2

        admin.create_partitions({topic_name: NewPartitions(total_count=3)})
        assert len(admin.describe_topics([topic_name])[0]["partitions"]) == 3

        resource = ConfigResource(ConfigResourceType.TOPIC, topic_name)
        entries = _config_entries(admin.describe_configs([resource]), topic_name)
        assert entries["retention.ms"] == "3600000"

        admin.alter_configs(
            [
                ConfigResource(
                    ConfigResourceType.TOPIC, topic_name, configs={"retention.ms": "7200000"}
                )
            ]
        )
        entries = _config_entries(admin.describe_configs([resource]), topic_name)
        assert entries["retention.ms"] == "7200000"

        cluster = admin.describe_cluster()
        assert cluster["controller_id"] == 0
        assert len(cluster["brokers"]) == 1

        producer = KafkaProducer(bootstrap_servers=bootstrap)
        try:
            for _ in range(5):
                producer.send(topic_name, value=b"x", partition=0)
            producer.flush()
        finally:
            producer.close()
        admin.delete_records({TopicPartition(topic_name, 0): 3})
        consumer = KafkaConsumer(bootstrap_servers=bootstrap)
        try:
            tp = TopicPartition(topic_name, 0)
            assert consumer.beginning_offsets([tp])[tp] == 3
            assert consumer.end_offsets([tp])[tp] == 5
        finally:
            consumer.close()

        tp = TopicPartition(topic_name, 0)
        admin.alter_group_offsets(group_name, {tp: _offset(4)})
        listed = admin.list_group_offsets({group_name: None})
        assert listed[group_name][tp].offset == 4
        assert group_name in [g["group_id"] for g in admin.list_groups()]
        described = admin.describe_groups([group_name])
        assert described[group_name]["group_state"] == "Empty"
        admin.delete_group_offsets(group_name, [tp])
        assert admin.list_group_offsets({group_name: None})[group_name] == {}
        admin.alter_group_offsets(group_name, {tp: _offset(2)})
        admin.delete_groups([group_name])
        assert group_name not in [g["group_id"] for g in admin.list_groups()]

        admin.delete_topics([topic_name])
        assert topic_name not in admin.list_topics()
    finally:
        admin.close()


def _config_entries(described: dict, topic: str) -> dict[str, str]:
    return {name: entry["value"] for name, entry in described["topic"][topic].items()}


def test_configs_are_described_with_their_types_for_topics_and_the_broker(
    bootstrap: str, topic_name: str
) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic_name, 1, 1, topic_configs={"retention.ms": "60000"})])
        resource = ConfigResource(ConfigResourceType.TOPIC, topic_name)
        topic = admin.describe_configs([resource], config_filter="all")["topic"][topic_name]
        assert (topic["retention.ms"]["value"], topic["retention.ms"]["config_type"]) == (
            "60000", "LONG")  # fmt: skip
        assert topic["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG"
        assert topic["cleanup.policy"]["config_type"] == "LIST"
        assert topic["max.message.bytes"]["config_type"] == "INT"
        assert topic["segment.bytes"]["config_source"] == "DEFAULT_CONFIG"
        broker_resource = ConfigResource(ConfigResourceType.BROKER, "0")
        broker = admin.describe_configs([broker_resource], config_filter="all")["broker"]["0"]
        assert broker["broker.id"]["value"] == "0"
        assert broker["default.replication.factor"]["value"] == "1"
        assert broker["num.partitions"]["config_type"] == "INT"
        assert broker["num.partitions"]["config_source"] == "STATIC_BROKER_CONFIG"
        assert broker["num.partitions"]["read_only"] is True
        assert broker["auto.create.topics.enable"]["config_type"] == "BOOLEAN"
        assert broker["log.retention.ms"]["config_type"] == "LONG"
        host, port = bootstrap.rsplit(":", 1)
        listeners = broker["advertised.listeners"]
        assert (listeners["value"], listeners["config_type"]) == (
            f"PLAINTEXT://{host}:{port}", "LIST")  # fmt: skip
        assert listeners["is_sensitive"] is False and listeners["synonyms"] == []
    finally:
        admin.close()
