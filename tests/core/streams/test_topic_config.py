"""Config entries as DescribeConfigs reports them: every topic config Wharf knows has Kafka's
type, and the broker's settings are described under Kafka's names from the broker's config."""

from __future__ import annotations

from wharf.core.config import BrokerConfig, TopicDefaults
from wharf.core.streams.broker_configs import describe_broker
from wharf.core.streams.topic_config import (
    ENFORCED,
    STORED_ONLY,
    TOPIC_CONFIG_TYPES,
    ConfigSource,
    ConfigType,
    describe,
)


def test_every_topic_config_wharf_knows_has_a_type() -> None:
    assert set(ENFORCED) | STORED_ONLY == set(TOPIC_CONFIG_TYPES)
    assert ConfigType.UNKNOWN not in TOPIC_CONFIG_TYPES.values()


def test_described_topic_configs_carry_their_types() -> None:
    entries = {e.name: e for e in describe(TopicDefaults(), {"min.insync.replicas": "2",
                                                             "retention.ms": "10"})}  # fmt: skip
    assert entries["retention.ms"].type is ConfigType.LONG
    assert entries["retention.ms"].source is ConfigSource.DYNAMIC_TOPIC_CONFIG
    assert entries["cleanup.policy"].type is ConfigType.LIST
    assert entries["max.message.bytes"].type is ConfigType.INT
    assert entries["message.timestamp.type"].type is ConfigType.STRING
    assert entries["min.insync.replicas"].type is ConfigType.INT
    assert entries["segment.bytes"].source is ConfigSource.DEFAULT_CONFIG


def test_the_broker_is_described_from_its_config() -> None:
    config = BrokerConfig(
        node_id=3,
        auto_create_topics=False,
        topic_defaults=TopicDefaults(partitions=4, retention_ms=None, segment_bytes=1 << 20),
        group_initial_rebalance_delay_ms=0,
        offsets_retention_ms=2 * 24 * 3600 * 1000,
    )
    described = describe_broker(config, "PLAINTEXT://wharf.example:9092")
    entries = {e.name: e for e in described}
    assert [e.name for e in described] == sorted(entries)
    assert {name: e.value for name, e in entries.items()} == {
        "advertised.listeners": "PLAINTEXT://wharf.example:9092",
        "auto.create.topics.enable": "false",
        "broker.id": "3",
        "default.replication.factor": "1",
        "group.initial.rebalance.delay.ms": "0",
        "group.max.session.timeout.ms": "1800000",
        "group.min.session.timeout.ms": "6000",
        "log.cleanup.policy": "delete",
        "log.retention.bytes": "-1",
        "log.retention.check.interval.ms": "300000",
        "log.retention.ms": "-1",
        "log.roll.ms": "604800000",
        "log.segment.bytes": "1048576",
        "message.max.bytes": "1048588",
        "min.insync.replicas": "1",
        "node.id": "3",
        "num.partitions": "4",
        "offsets.retention.minutes": "2880",
    }
    assert all(e.read_only and e.source is ConfigSource.STATIC_BROKER_CONFIG
               for e in entries.values())  # fmt: skip
    assert entries["num.partitions"].type is ConfigType.INT
    assert entries["auto.create.topics.enable"].type is ConfigType.BOOLEAN
    assert entries["log.retention.ms"].type is ConfigType.LONG
    assert entries["advertised.listeners"].type is ConfigType.LIST
