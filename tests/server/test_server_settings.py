"""Settings layers, parsing and the configuration documentation."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from wharf.core.config import FsyncPolicy
from wharf.server.settings import (
    LogFormat,
    ServerSettings,
    SettingsError,
    dump_toml,
    load_settings,
    setting_specs,
    toml_value,
)

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "wharf.toml"
    path.write_text(text)
    return path


def test_defaults_without_any_source() -> None:
    assert load_settings() == ServerSettings()


def test_each_layer_overrides_the_previous_one(tmp_path: Path) -> None:
    toml = _toml(tmp_path, "[server]\nkafka_port = 1\namqp_port = 1\nhttp_port = 1\n")
    env = {"WHARF_AMQP_PORT": "2", "WHARF_HTTP_PORT": "2"}
    settings = load_settings(config_file=toml, env=env, overrides={"server.http_port": 3})
    assert (settings.kafka_port, settings.amqp_port, settings.http_port) == (1, 2, 3)


def test_nested_tables_and_environment_names(tmp_path: Path) -> None:
    toml = _toml(
        tmp_path,
        '[broker]\nfsync = "interval"\n[broker.topic_defaults]\npartitions = 4\n'
        'retention_ms = "none"\n',
    )
    env = {"WHARF_TOPIC_SEGMENT_BYTES": "1_048_576", "WHARF_AUTO_CREATE_TOPICS": "off"}
    settings = load_settings(config_file=toml, env=env)
    assert settings.broker.fsync is FsyncPolicy.INTERVAL
    assert settings.broker.topic_defaults.partitions == 4
    assert settings.broker.topic_defaults.retention_ms is None
    assert settings.broker.topic_defaults.segment_bytes == 1 << 20
    assert settings.broker.auto_create_topics is False


def test_flag_values_are_range_checked() -> None:
    with pytest.raises(SettingsError, match=r"server.kafka_port: 65536 is out of range"):
        load_settings(overrides={"server.kafka_port": 65536})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nhttp_port = -1\n", "server.http_port: -1 is out of range"),
        ("[server]\nhttp_port = 1.5\n", "server.http_port: expected an integer"),
        ("[server]\nlog_format = 3\n", "server.log_format: expected one of text, json"),
        ("[broker]\nauto_create_topics = 1\n", "broker.auto_create_topics: expected true or false"),
        ("[broker.topic_defaults]\npartitions = 0\n", "partitions: 0 is out of range"),
        ('[server]\nhost = ""\n', "server.host: expected a non-empty string"),
        ("[nope]\nx = 1\n", "nope.x: unknown setting"),
        ("kafka_port = 1\n", "kafka_port: unknown setting"),
        ("[server\n", "is not valid TOML"),
    ],
)
def test_bad_toml_values_name_the_key_and_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = _toml(tmp_path, text)
    with pytest.raises(SettingsError) as info:
        load_settings(config_file=path)
    assert message in str(info.value)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="from environment variable WHARF_HTTP_PORT"):
        load_settings(env={"WHARF_HTTP_PORT": "eighty"})


def test_unknown_wharf_variables_are_ignored() -> None:
    assert load_settings(env={"WHARF_URL": "http://x"}) == ServerSettings()


def test_non_utf8_config_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'[server]\nhost = "\xe9"\n')
    with pytest.raises(SettingsError, match="is not UTF-8"):
        load_settings(config_file=path)


def test_dump_reads_back_to_equal_settings(tmp_path: Path) -> None:
    settings = load_settings(
        env={"WHARF_TOPIC_RETENTION_MS": "none", "WHARF_LOG_FORMAT": "json"},
        overrides={"server.data_dir": Path("/srv/wharf data"), "broker.fsync": "never"},
    )
    text = dump_toml(settings)
    tomllib.loads(text)
    assert load_settings(config_file=_toml(tmp_path, text)) == settings
    assert settings.log_format is LogFormat.JSON


def test_every_setting_is_documented_with_its_key_variable_and_default() -> None:
    docs = DOCS.read_text()
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"^\| `([a-z_.]+)` \|.*$", docs, flags=re.MULTILINE)
    }
    for spec in setting_specs():
        assert spec.key in rows, f"{spec.key} missing from {DOCS.name}"
        row = rows[spec.key]
        assert f"`{spec.env}`" in row
        assert f"`{toml_value(spec.default())}`" in row, (spec.key, row)
    assert set(rows) == {spec.key for spec in setting_specs()}


def test_cluster_settings_from_the_environment() -> None:
    settings = load_settings(
        env={
            "WHARF_CLUSTER_DATABASE": "postgresql://u:p@db:5432/wharf",
            "WHARF_CLUSTER_OBJECT_STORE": "s3://bucket/prefix",
            "WHARF_CLUSTER_LEASE_MS": "9000",
        }
    )
    assert settings.cluster.database == "postgresql://u:p@db:5432/wharf"
    assert settings.cluster.object_store == "s3://bucket/prefix"
    assert settings.cluster.lease_ms == 9000
    assert load_settings().cluster.database is None  # single-node mode by default


def test_a_cluster_database_without_an_object_store_is_refused() -> None:
    with pytest.raises(SettingsError, match="cluster.object_store is not"):
        load_settings(overrides={"cluster.database": "postgresql://db/wharf"})


def test_a_lease_not_longer_than_the_heartbeat_is_refused() -> None:
    with pytest.raises(SettingsError, match="lease_ms .1000. must be longer"):
        load_settings(
            overrides={
                "cluster.database": "postgresql://db/wharf",
                "cluster.object_store": "s3://bucket",
                "cluster.lease_ms": 1000,
            }
        )
