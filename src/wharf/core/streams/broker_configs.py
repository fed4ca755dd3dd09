"""The broker's settings under Kafka's broker config names, for DescribeConfigs.

Wharf's broker settings come from its configuration file and ``wharf serve`` flags, so over the
Kafka protocol they are read-only, reported as static broker configs, each with the type Kafka
declares for it. Only settings Wharf acts on are listed (one node: a replication factor and
in-sync replicas of 1).
"""

from __future__ import annotations

from wharf.core.config import BrokerConfig
from wharf.core.streams.topic_config import ConfigEntry, ConfigSource, ConfigType

__all__ = ["describe_broker"]

_MS_PER_MINUTE = 60_000


def _entry(name: str, value: object, type_: ConfigType) -> ConfigEntry:
    text = str(value).lower() if isinstance(value, bool) else str(value)
    return ConfigEntry(name, text, ConfigSource.STATIC_BROKER_CONFIG, read_only=True, type=type_)


def describe_broker(config: BrokerConfig, advertised_listeners: str) -> list[ConfigEntry]:
    """Every broker setting Wharf acts on, by its Kafka name, sorted by name;
    ``advertised_listeners``: how clients reach the listener asked (``PLAINTEXT://host:port``),
    which the front end knows."""
    topics = config.topic_defaults
    retention_ms = -1 if topics.retention_ms is None else topics.retention_ms
    retention_bytes = -1 if topics.retention_bytes is None else topics.retention_bytes
    entries = [
        _entry("advertised.listeners", advertised_listeners, ConfigType.LIST),
        _entry("auto.create.topics.enable", config.auto_create_topics, ConfigType.BOOLEAN),
        _entry("broker.id", config.node_id, ConfigType.INT),
        _entry("default.replication.factor", 1, ConfigType.INT),
        _entry("group.initial.rebalance.delay.ms", config.group_initial_rebalance_delay_ms,
               ConfigType.INT),
        _entry("group.max.session.timeout.ms", config.group_max_session_timeout_ms,
               ConfigType.INT),
        _entry("group.min.session.timeout.ms", config.group_min_session_timeout_ms,
               ConfigType.INT),
        _entry("log.cleanup.policy", topics.cleanup_policy, ConfigType.LIST),
        _entry("log.retention.bytes", retention_bytes, ConfigType.LONG),
        _entry("log.retention.check.interval.ms", config.retention_check_interval_ms,
               ConfigType.LONG),
        _entry("log.retention.ms", retention_ms, ConfigType.LONG),
        _entry("log.roll.ms", topics.segment_ms, ConfigType.LONG),
        _entry("log.segment.bytes", topics.segment_bytes, ConfigType.INT),
        _entry("message.max.bytes", topics.max_message_bytes, ConfigType.INT),
        _entry("min.insync.replicas", 1, ConfigType.INT),
        _entry("node.id", config.node_id, ConfigType.INT),
        _entry("num.partitions", topics.partitions, ConfigType.INT),
        _entry("offsets.retention.minutes", config.offsets_retention_ms // _MS_PER_MINUTE,
               ConfigType.INT),
    ]  # fmt: skip
    return sorted(entries, key=lambda entry: entry.name)
