"""Settings of the ``wharf serve`` process, loaded from four layers.

How it works: every setting is a field of :class:`ServerSettings` or of the core's
:class:`~wharf.core.config.BrokerConfig` (and its nested :class:`TopicDefaults`). The fields are
walked once to build a table of :class:`SettingSpec` (TOML key, environment variable, type), so
the TOML loader, the environment loader, ``--print-config`` and the documentation test all agree
on one list. Layers are applied in order, each overriding the previous one::

    defaults  <  TOML file (--config or WHARF_CONFIG)  <  WHARF_* environment  <  flags

Every value passes through the same parser and range check whatever layer it came from, and a
bad value raises :class:`SettingsError` with a one-line message naming the key and its source.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import tomllib
import types
import typing
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from pathlib import Path

from wharf.core.config import BrokerConfig
from wharf.errors import WharfError

__all__ = [
    "ENV_PREFIX",
    "ClusterSettings",
    "LogFormat",
    "LogLevel",
    "ServerSettings",
    "SettingSpec",
    "SettingsError",
    "dump_toml",
    "hide_password",
    "load_settings",
    "setting_specs",
    "toml_value",
]

ENV_PREFIX = "WHARF_"
CONFIG_ENV_VAR = "WHARF_CONFIG"
_NONE_WORD = "none"  # how "no limit" is spelled for optional numbers in TOML and the environment


class SettingsError(WharfError):
    """A setting is missing, unknown, of the wrong type or out of range."""


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


@dataclass(slots=True)
class ClusterSettings:
    """Cluster mode (docs/cluster.md, "Running a cluster"): set ``database`` to run as a node."""

    database: str | None = None  # postgresql://USER:PASS@HOST:PORT/DB; None = single-node mode
    object_store: str | None = None  # s3://BUCKET/PREFIX; required with ``database``
    object_store_endpoint: str | None = None  # None = AWS_ENDPOINT_URL, else AWS itself
    object_store_region: str | None = None  # None = AWS_REGION, else us-east-1
    heartbeat_interval_ms: int = 1000  # how often the node renews its lease
    lease_ms: int = 5000  # a node silent this long is dead to the others


@dataclass(slots=True)
class ServerSettings:
    """Everything ``wharf serve`` needs: where to listen, where the data lives, the core config."""

    data_dir: Path = Path("wharf-data")
    host: str = "127.0.0.1"
    advertised_host: str | None = None  # host named to Kafka clients; None = ``host``
    kafka_port: int = 9092
    # Kafka connections with nothing pending and no traffic for this long are closed, as
    # Kafka's connections.max.idle.ms (0: never)
    kafka_connections_max_idle_ms: int = 600_000
    # Kafka clients must authenticate with SASL PLAIN (the broker's users) first
    kafka_sasl_plain: bool = False
    amqp_port: int = 5672
    http_port: int = 8080
    log_format: LogFormat = LogFormat.TEXT
    log_level: LogLevel = LogLevel.INFO
    shutdown_timeout_ms: int = 15_000  # how long connections get to finish on SIGTERM
    broker: BrokerConfig = field(default_factory=BrokerConfig)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)


@dataclass(frozen=True, slots=True)
class SettingSpec:
    """One setting: where it lives in TOML and in the environment, and how to parse it."""

    key: str  # dotted TOML key, e.g. "server.kafka_port"
    env: str  # environment variable, e.g. "WHARF_KAFKA_PORT"
    attr_path: tuple[str, ...]  # attribute path from ServerSettings, e.g. ("broker", "fsync")
    type: object  # the resolved annotation
    minimum: int | float | None
    maximum: int | float | None

    def default(self) -> object:
        return self.get(ServerSettings())

    def get(self, settings: ServerSettings) -> object:
        obj: object = settings
        for name in self.attr_path:
            obj = getattr(obj, name)
        return obj

    def set(self, settings: ServerSettings, value: object) -> None:
        obj: object = settings
        for name in self.attr_path[:-1]:
            obj = getattr(obj, name)
        setattr(obj, self.attr_path[-1], value)

    def parse(self, raw: object, source: str) -> object:
        """Convert ``raw`` (a TOML value, or a string from the environment) and range-check it."""
        try:
            value = _coerce(self.type, raw)
        except (TypeError, ValueError) as exc:
            raise SettingsError(f"{self.key}: {exc} (from {source})") from None
        if isinstance(value, int | float) and not isinstance(value, bool):
            low, high = self.minimum, self.maximum
            if (low is not None and value < low) or (high is not None and value > high):
                bounds = f">= {low}" if high is None else f"between {low} and {high}"
                raise SettingsError(
                    f"{self.key}: {value!r} is out of range, must be {bounds} (from {source})"
                )
        return value


# Range limits; any integer setting not listed here must be >= 0.
_LIMITS: dict[str, tuple[int | None, int | None]] = {
    "server.kafka_port": (0, 65535),
    "server.amqp_port": (0, 65535),
    "server.http_port": (0, 65535),
    "broker.fsync_interval_ms": (1, None),
    "broker.topic_defaults.partitions": (1, None),
    "broker.topic_defaults.segment_bytes": (1, None),
    "broker.topic_defaults.segment_ms": (1, None),
    "broker.topic_defaults.max_message_bytes": (1, None),
    "broker.queue_segment_bytes": (1, None),
    "broker.retention_check_interval_ms": (1, None),
    "broker.open_partition_logs": (1, None),
    "broker.open_queue_logs": (1, None),
    "cluster.heartbeat_interval_ms": (1, None),
    "cluster.lease_ms": (1, None),
    "broker.cluster_jobs.interval_ms": (1, None),
    "broker.cluster_jobs.compact_min_batches": (1, None),
    "broker.cluster_jobs.job_timeout_ms": (1, None),
}

# TOML table and environment prefix of the nested dataclasses whose names are not the default
# (the table is the dotted attribute path, the prefix WHARF_ plus the last attribute name).
_TABLES: dict[tuple[str, ...], tuple[str, str]] = {
    (): ("server", ENV_PREFIX),
    ("broker",): ("broker", ENV_PREFIX),
    ("broker", "topic_defaults"): ("broker.topic_defaults", ENV_PREFIX + "TOPIC_"),
}


def _walk(cls: type[object], path: tuple[str, ...]) -> Iterator[SettingSpec]:
    """Specs of ``cls``'s fields: its own scalars first, then each nested table."""
    if path in _TABLES:
        table, env_prefix = _TABLES[path]
    else:
        table, env_prefix = ".".join(path), f"{ENV_PREFIX}{path[-1].upper()}_"
    hints = typing.get_type_hints(cls)
    nested: list[tuple[type[object], str]] = []
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        hint = hints[f.name]
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            nested.append((hint, f.name))
            continue
        key = f"{table}.{f.name}"
        low, high = _LIMITS.get(key, (0, None))
        yield SettingSpec(
            key=key,
            env=env_prefix + f.name.upper(),
            attr_path=(*path, f.name),
            type=hint,
            minimum=low,
            maximum=high,
        )
    for hint, name in nested:
        yield from _walk(hint, (*path, name))


_SPECS: tuple[SettingSpec, ...] = tuple(_walk(ServerSettings, ()))
_BY_KEY: dict[str, SettingSpec] = {s.key: s for s in _SPECS}
_BY_ENV: dict[str, SettingSpec] = {s.env: s for s in _SPECS}
assert len(_BY_ENV) == len(_SPECS), "two settings share an environment variable"


def setting_specs() -> tuple[SettingSpec, ...]:
    """Every setting, in documentation order."""
    return _SPECS


def _coerce(tp: object, raw: object) -> object:  # noqa: C901 - one branch per supported type
    """Parse ``raw`` as ``tp``; strings are accepted for every type (environment values)."""
    if isinstance(tp, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if isinstance(raw, str) and raw.strip().lower() == _NONE_WORD:
            return None
        (inner,) = args
        return _coerce(inner, raw)
    if tp is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str):
            word = raw.strip().lower()
            if word in ("1", "true", "yes", "on"):
                return True
            if word in ("0", "false", "no", "off"):
                return False
        raise ValueError(f"expected true or false, got {raw!r}")
    if tp is int:
        if isinstance(raw, int) and not isinstance(raw, bool):
            return raw
        if isinstance(raw, str):
            try:
                return int(raw.strip().replace("_", ""), 10)
            except ValueError:
                pass
        raise ValueError(f"expected an integer, got {raw!r}")
    if tp is float:
        if isinstance(raw, int | float) and not isinstance(raw, bool):
            value = float(raw)
        elif isinstance(raw, str):
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"expected a number, got {raw!r}") from None
        else:
            raise ValueError(f"expected a number, got {raw!r}")
        if not math.isfinite(value):
            raise ValueError(f"expected a finite number, got {raw!r}")
        return value
    if isinstance(tp, type) and issubclass(tp, Enum):
        if isinstance(raw, tp):
            return raw
        choices = ", ".join(str(m.value) for m in tp)
        if isinstance(raw, str):
            try:
                return tp(raw.strip().lower())
            except ValueError:
                pass
        raise ValueError(f"expected one of {choices}, got {raw!r}")
    if tp is str:
        if isinstance(raw, str) and raw.strip():
            return raw.strip()
        raise ValueError(f"expected a non-empty string, got {raw!r}")
    if tp is Path:
        if isinstance(raw, Path):
            return raw
        if isinstance(raw, str) and raw.strip():
            return Path(raw.strip())
        raise ValueError(f"expected a path, got {raw!r}")
    raise TypeError(f"unsupported setting type {tp!r}")


def _flatten(table: Mapping[str, object], prefix: str) -> Iterator[tuple[str, object]]:
    for name, value in table.items():
        key = f"{prefix}.{name}" if prefix else name
        if isinstance(value, dict):
            yield from _flatten(value, key)
        else:
            yield key, value


def _read_toml(path: Path) -> dict[str, object]:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read config file {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise SettingsError(f"config file {path} is not UTF-8 text") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {path} is not valid TOML: {exc}") from None


def load_settings(
    *,
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, object] | None = None,
    flag_names: Mapping[str, str] | None = None,
) -> ServerSettings:
    """Build the effective settings: defaults < TOML < ``WHARF_*`` environment < ``overrides``.

    ``overrides`` maps dotted keys (``"server.kafka_port"``) to values given as flags, and
    ``flag_names`` those keys to the flags' names, which errors then name (``--kafka-port``);
    unknown ``WHARF_*`` variables are ignored (other tools share the prefix), unknown TOML keys
    are not.
    """
    settings = ServerSettings()
    env = env or {}
    path = config_file
    if path is None and env.get(CONFIG_ENV_VAR, "").strip():
        path = Path(env[CONFIG_ENV_VAR].strip())
    if path is not None:
        source = f"config file {path}"
        for key, raw in _flatten(_read_toml(path), ""):
            spec = _BY_KEY.get(key)
            if spec is None:
                raise SettingsError(f"{key}: unknown setting (from {source})")
            spec.set(settings, spec.parse(raw, source))
    for name, raw in env.items():
        spec = _BY_ENV.get(name)
        if spec is not None:
            spec.set(settings, spec.parse(raw, f"environment variable {name}"))
    for key, raw in (overrides or {}).items():
        spec = _BY_KEY[key]
        flag = (flag_names or {}).get(key)
        spec.set(settings, spec.parse(raw, f"flag for {key}" if flag is None else flag))
    _check_cluster(settings.cluster)
    return settings


def _check_cluster(cluster: ClusterSettings) -> None:
    """The cluster settings that only make sense together."""
    if cluster.database is None:
        return
    if cluster.object_store is None:
        raise SettingsError(
            "cluster.database is set but cluster.object_store is not: a cluster keeps its "
            "record batches in an object store (--object-store s3://BUCKET/PREFIX)"
        )
    if cluster.lease_ms <= cluster.heartbeat_interval_ms:
        raise SettingsError(
            f"cluster.lease_ms ({cluster.lease_ms}) must be longer than "
            f"cluster.heartbeat_interval_ms ({cluster.heartbeat_interval_ms})"
        )


def toml_value(value: object) -> str:
    """One value as TOML source text (``None`` is spelled ``"none"``)."""
    if value is None:
        return json.dumps(_NONE_WORD)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return json.dumps(str(value.value))
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


_URL_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^:/@]*):[^@/]*@", re.IGNORECASE)


def hide_password(url: str) -> str:
    """``url`` with the password of its user part (``scheme://user:PASSWORD@``) as ``****``."""
    return _URL_PASSWORD.sub(r"\1:****@", url)


def dump_toml(settings: ServerSettings) -> str:
    """The settings as a TOML document that :func:`load_settings` reads back unchanged, except
    for a password in the database URL, which is shown as ``****`` (the output is meant for
    screens and logs; libpq's ``PGPASSWORD`` keeps a password out of the URL altogether)."""
    lines: list[str] = []
    table = None
    for spec in _SPECS:
        section, name = spec.key.rsplit(".", 1)
        if section != table:
            if lines:
                lines.append("")
            lines.append(f"[{section}]")
            table = section
        value = spec.get(settings)
        if spec.key == "cluster.database" and isinstance(value, str):
            shown = hide_password(value)
            if shown != value:
                lines.append("# password hidden")
            value = shown
        lines.append(f"{name} = {toml_value(value)}")
    return "\n".join(lines) + "\n"
