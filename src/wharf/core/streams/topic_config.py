"""Per-topic settings under Kafka's config names, with the broker's defaults behind them.

Topics store only their overrides (name -> string, as Kafka's admin API sends them); the
effective :class:`TopicConfig` is the broker's :class:`TopicDefaults` with the overrides parsed
on top. Wharf acts on ``retention.ms``, ``retention.bytes``, ``cleanup.policy``,
``max.message.bytes``, ``segment.bytes``, ``segment.ms`` and ``message.timestamp.type``. Other
standard Kafka topic configs (:data:`STORED_ONLY`) are accepted and reported back so that tools
creating topics with them work, but they change nothing; unknown names are refused
(``INVALID_CONFIG``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum

from wharf.core.config import TopicDefaults
from wharf.core.streams.errors import InvalidConfigError
from wharf.storage.log import LogConfig

__all__ = [
    "ConfigEntry",
    "ConfigSource",
    "ConfigType",
    "STORED_ONLY",
    "TopicConfig",
    "describe",
    "parse_overrides",
]

RETENTION_MS = "retention.ms"
RETENTION_BYTES = "retention.bytes"
CLEANUP_POLICY = "cleanup.policy"
MAX_MESSAGE_BYTES = "max.message.bytes"
SEGMENT_BYTES = "segment.bytes"
SEGMENT_MS = "segment.ms"
TIMESTAMP_TYPE = "message.timestamp.type"

ENFORCED = (RETENTION_MS, RETENTION_BYTES, CLEANUP_POLICY, MAX_MESSAGE_BYTES, SEGMENT_BYTES,
            SEGMENT_MS, TIMESTAMP_TYPE)
STORED_ONLY = frozenset(
    {
        "compression.type",
        "delete.retention.ms",
        "file.delete.delay.ms",
        "flush.messages",
        "flush.ms",
        "index.interval.bytes",
        "local.retention.bytes",
        "local.retention.ms",
        "max.compaction.lag.ms",
        "message.downconversion.enable",
        "message.format.version",
        "message.timestamp.after.max.ms",
        "message.timestamp.before.max.ms",
        "message.timestamp.difference.max.ms",
        "min.cleanable.dirty.ratio",
        "min.compaction.lag.ms",
        "min.insync.replicas",
        "preallocate",
        "remote.storage.enable",
        "segment.index.bytes",
        "segment.jitter.ms",
        "unclean.leader.election.enable",
    }
)
CLEANUP_POLICIES = frozenset({"delete", "compact", "compact,delete", "delete,compact"})
CREATE_TIME = "CreateTime"
LOG_APPEND_TIME = "LogAppendTime"
# The smallest segment Kafka allows (segment.bytes lower bound), and a sane floor for the rest.
MIN_SEGMENT_BYTES = 14
MIN_MESSAGE_BYTES = 0


class ConfigSource(IntEnum):
    """Where a value comes from; values equal Kafka's DescribeConfigs config sources."""

    DYNAMIC_TOPIC_CONFIG = 1
    STATIC_BROKER_CONFIG = 4
    DEFAULT_CONFIG = 5


class ConfigType(IntEnum):
    """The type of a config's value; values equal Kafka's DescribeConfigs (v3+) types."""

    UNKNOWN = 0
    BOOLEAN = 1
    STRING = 2
    INT = 3
    SHORT = 4
    LONG = 5
    DOUBLE = 6
    LIST = 7


# The type of every topic config Wharf enforces or stores, as Kafka declares it.
TOPIC_CONFIG_TYPES: dict[str, ConfigType] = {
    RETENTION_MS: ConfigType.LONG,
    RETENTION_BYTES: ConfigType.LONG,
    CLEANUP_POLICY: ConfigType.LIST,
    MAX_MESSAGE_BYTES: ConfigType.INT,
    SEGMENT_BYTES: ConfigType.INT,
    SEGMENT_MS: ConfigType.LONG,
    TIMESTAMP_TYPE: ConfigType.STRING,
    "compression.type": ConfigType.STRING,
    "delete.retention.ms": ConfigType.LONG,
    "file.delete.delay.ms": ConfigType.LONG,
    "flush.messages": ConfigType.LONG,
    "flush.ms": ConfigType.LONG,
    "index.interval.bytes": ConfigType.INT,
    "local.retention.bytes": ConfigType.LONG,
    "local.retention.ms": ConfigType.LONG,
    "max.compaction.lag.ms": ConfigType.LONG,
    "message.downconversion.enable": ConfigType.BOOLEAN,
    "message.format.version": ConfigType.STRING,
    "message.timestamp.after.max.ms": ConfigType.LONG,
    "message.timestamp.before.max.ms": ConfigType.LONG,
    "message.timestamp.difference.max.ms": ConfigType.LONG,
    "min.cleanable.dirty.ratio": ConfigType.DOUBLE,
    "min.compaction.lag.ms": ConfigType.LONG,
    "min.insync.replicas": ConfigType.INT,
    "preallocate": ConfigType.BOOLEAN,
    "remote.storage.enable": ConfigType.BOOLEAN,
    "segment.index.bytes": ConfigType.INT,
    "segment.jitter.ms": ConfigType.LONG,
    "unclean.leader.election.enable": ConfigType.BOOLEAN,
}


@dataclass(frozen=True, slots=True)
class ConfigEntry:
    name: str
    value: str | None
    source: ConfigSource
    read_only: bool = False
    sensitive: bool = False
    type: ConfigType = ConfigType.UNKNOWN

    @property
    def is_default(self) -> bool:
        return self.source is ConfigSource.DEFAULT_CONFIG


@dataclass(frozen=True, slots=True)
class TopicConfig:
    """The settings a topic's partitions act on."""

    retention_ms: int | None
    retention_bytes: int | None
    cleanup_policy: str
    max_message_bytes: int
    segment_bytes: int
    segment_ms: int
    # message.timestamp.type=LogAppendTime: batches are stamped with the time the broker
    # appended them (CreateTime: the producer's timestamps stand)
    log_append_time: bool = False

    @classmethod
    def resolve(cls, defaults: TopicDefaults, overrides: Mapping[str, str]) -> TopicConfig:
        parsed = _parse(overrides)
        return cls(
            retention_ms=parsed.get(RETENTION_MS, defaults.retention_ms),
            retention_bytes=parsed.get(RETENTION_BYTES, defaults.retention_bytes),
            cleanup_policy=overrides.get(CLEANUP_POLICY, defaults.cleanup_policy),
            max_message_bytes=_int_or(parsed.get(MAX_MESSAGE_BYTES), defaults.max_message_bytes),
            segment_bytes=_int_or(parsed.get(SEGMENT_BYTES), defaults.segment_bytes),
            segment_ms=_int_or(parsed.get(SEGMENT_MS), defaults.segment_ms),
            log_append_time=overrides.get(TIMESTAMP_TYPE, CREATE_TIME) == LOG_APPEND_TIME,
        )

    @property
    def deletes_old_data(self) -> bool:
        """Whether time/size retention applies (``cleanup.policy`` includes ``delete``)."""
        return "delete" in self.cleanup_policy.split(",")

    def log_config(self) -> LogConfig:
        keep = self.deletes_old_data
        return LogConfig(
            segment_bytes=self.segment_bytes,
            segment_ms=self.segment_ms,
            retention_ms=self.retention_ms if keep else None,
            retention_bytes=self.retention_bytes if keep else None,
            max_batch_bytes=max(self.max_message_bytes, 61),
        )


def parse_overrides(configs: Mapping[str, str | None]) -> dict[str, str]:
    """Validate topic config overrides; ``None`` values are dropped (they mean "default")."""
    given = {name: value for name, value in configs.items() if value is not None}
    if CLEANUP_POLICY in given:
        given[CLEANUP_POLICY] = given[CLEANUP_POLICY].replace(" ", "")
    for name in given:
        if name not in ENFORCED and name not in STORED_ONLY:
            raise InvalidConfigError(f"unknown topic config {name!r}")
    _parse(given)
    return given


def describe(defaults: TopicDefaults, overrides: Mapping[str, str]) -> list[ConfigEntry]:
    """Every enforced config with its effective value, plus any stored-only overrides."""
    base = {
        RETENTION_MS: _str(defaults.retention_ms),
        RETENTION_BYTES: _str(defaults.retention_bytes),
        CLEANUP_POLICY: defaults.cleanup_policy,
        MAX_MESSAGE_BYTES: str(defaults.max_message_bytes),
        SEGMENT_BYTES: str(defaults.segment_bytes),
        SEGMENT_MS: str(defaults.segment_ms),
        TIMESTAMP_TYPE: CREATE_TIME,
    }
    types = TOPIC_CONFIG_TYPES
    entries = [
        ConfigEntry(name, overrides[name], ConfigSource.DYNAMIC_TOPIC_CONFIG, type=types[name])
        if name in overrides
        else ConfigEntry(name, value, ConfigSource.DEFAULT_CONFIG, type=types[name])
        for name, value in base.items()
    ]
    entries += [
        ConfigEntry(name, value, ConfigSource.DYNAMIC_TOPIC_CONFIG,
                    type=types.get(name, ConfigType.UNKNOWN))
        for name, value in sorted(overrides.items())
        if name not in base
    ]  # fmt: skip
    return entries


def _str(value: int | None) -> str:
    return "-1" if value is None else str(value)


def _int_or(value: int | None, default: int) -> int:
    return default if value is None else value


def _parse(configs: Mapping[str, str]) -> dict[str, int | None]:
    """The enforced numeric settings among ``configs``; -1 means unlimited where Kafka says so."""
    out: dict[str, int | None] = {}
    for name in (RETENTION_MS, RETENTION_BYTES):
        if name in configs:
            value = _integer(name, configs[name])
            if value < -1:
                raise InvalidConfigError(f"{name} must be -1 (unlimited) or >= 0, not {value}")
            out[name] = None if value == -1 else value
    for name, floor in (
        (MAX_MESSAGE_BYTES, MIN_MESSAGE_BYTES),
        (SEGMENT_BYTES, MIN_SEGMENT_BYTES),
        (SEGMENT_MS, 1),
    ):
        if name in configs:
            value = _integer(name, configs[name])
            if value < floor:
                raise InvalidConfigError(f"{name} must be at least {floor}, not {value}")
            out[name] = value
    if CLEANUP_POLICY in configs:
        policy = configs[CLEANUP_POLICY].replace(" ", "")
        if policy not in CLEANUP_POLICIES:
            raise InvalidConfigError(
                f"cleanup.policy must be delete, compact or both, not {configs[CLEANUP_POLICY]!r}"
            )
    if TIMESTAMP_TYPE in configs and configs[TIMESTAMP_TYPE] not in (CREATE_TIME, LOG_APPEND_TIME):
        raise InvalidConfigError(
            f"message.timestamp.type must be CreateTime or LogAppendTime, not "
            f"{configs[TIMESTAMP_TYPE]!r}"
        )
    return out


def _integer(name: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise InvalidConfigError(f"{name} must be an integer, not {text!r}") from None
