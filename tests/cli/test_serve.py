"""``wharf serve`` options: --print-config, precedence of the settings layers, bad input."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tomllib
from pathlib import Path

from typer.testing import CliRunner

from helpers.broker_process import run_wharf
from wharf.cli.app import app
from wharf.cli.serve.command import OPTIONS, SUMMARY


def _print_config(*args: str, env: dict[str, str] | None = None) -> dict[str, object]:
    result = run_wharf("serve", *args, "--print-config", env=env)
    assert result.returncode == 0, result.stderr
    return tomllib.loads(result.stdout)


def test_print_config_shows_the_defaults() -> None:
    config = _print_config()
    assert config["server"] == {
        "data_dir": "wharf-data",
        "host": "127.0.0.1",
        "advertised_host": "none",
        "kafka_port": 9092,
        "kafka_connections_max_idle_ms": 600000,
        "kafka_sasl_plain": False,
        "amqp_port": 5672,
        "http_port": 8080,
        "log_format": "text",
        "log_level": "info",
        "shutdown_timeout_ms": 15000,
    }
    assert config["broker"]["fsync"] == "always"  # type: ignore[index]


def test_precedence_is_flags_then_environment_then_toml_then_defaults(tmp_path: Path) -> None:
    toml = tmp_path / "wharf.toml"
    toml.write_text(
        '[server]\nkafka_port = 1111\namqp_port = 2222\nhttp_port = 3333\nhost = "127.0.0.2"\n'
        '[broker]\nfsync = "never"\n'
    )
    env = {"WHARF_AMQP_PORT": "4444", "WHARF_HTTP_PORT": "5555", "WHARF_FSYNC": "interval"}
    config = _print_config("--config", str(toml), "--http-port", "6666", env=env)
    server = config["server"]
    assert isinstance(server, dict)
    assert server["kafka_port"] == 1111  # TOML over default
    assert server["amqp_port"] == 4444  # environment over TOML
    assert server["http_port"] == 6666  # flag over environment
    assert server["host"] == "127.0.0.2"  # TOML over default
    assert server["data_dir"] == "wharf-data"  # default
    assert config["broker"]["fsync"] == "interval"  # type: ignore[index]
    config = _print_config("--config", str(toml), "--fsync", "always", env=env)
    assert config["broker"]["fsync"] == "always"  # type: ignore[index]


def test_config_file_from_the_environment(tmp_path: Path) -> None:
    toml = tmp_path / "wharf.toml"
    toml.write_text("[broker.topic_defaults]\npartitions = 7\n")
    config = _print_config(env={"WHARF_CONFIG": str(toml)})
    assert config["broker"]["topic_defaults"]["partitions"] == 7  # type: ignore[index]


def test_printed_config_reads_back_unchanged(tmp_path: Path) -> None:
    first = run_wharf("serve", "--kafka-port", "0", "--fsync", "never", "--print-config")
    assert first.returncode == 0, first.stderr
    toml = tmp_path / "printed.toml"
    toml.write_text(first.stdout)
    second = run_wharf("serve", "--config", str(toml), "--print-config")
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout


def _assert_one_line_error(
    args: list[str], expected: str, env: dict[str, str] | None = None
) -> None:
    result = run_wharf("serve", *args, env=env)
    assert result.returncode == 2, (result.stdout, result.stderr)
    errors = [line for line in result.stderr.splitlines() if "rror" in line]
    assert len(errors) == 1, result.stderr
    assert expected in errors[0], errors[0]
    assert "Traceback" not in result.stderr


def test_malformed_toml_is_refused_with_one_line(tmp_path: Path) -> None:
    toml = tmp_path / "bad.toml"
    toml.write_text("[server\nkafka_port = 1\n")
    _assert_one_line_error(["--config", str(toml)], f"config file {toml} is not valid TOML")


def test_unknown_toml_key_is_refused(tmp_path: Path) -> None:
    toml = tmp_path / "typo.toml"
    toml.write_text("[server]\nkafka_prot = 1\n")
    _assert_one_line_error(["--config", str(toml)], "server.kafka_prot: unknown setting")


def test_wrong_toml_type_is_refused(tmp_path: Path) -> None:
    toml = tmp_path / "type.toml"
    toml.write_text('[server]\nkafka_port = "ninety"\n')
    _assert_one_line_error(["--config", str(toml)], "server.kafka_port: expected an integer")


def test_missing_config_file_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    _assert_one_line_error(["--config", str(missing)], f"cannot read config file {missing}")


def test_bad_environment_value_is_refused() -> None:
    _assert_one_line_error([], "environment variable WHARF_FSYNC", env={"WHARF_FSYNC": "sometimes"})


def test_bad_flag_values_are_refused() -> None:
    _assert_one_line_error(["--fsync", "sometimes"], "Invalid value for '--fsync'")
    _assert_one_line_error(["--kafka-port", "ninety"], "Invalid value for '--kafka-port'")
    _assert_one_line_error(["--http-port", "70000"], "server.http_port: 70000 is out of range")
    _assert_one_line_error(["--log-format", "xml"], "Invalid value for '--log-format'")


def test_print_config_hides_the_database_password() -> None:
    url = "postgresql://wharf:s3cret@db.example:5432/wharf"
    result = run_wharf(
        "serve", "--cluster", url, "--object-store", "s3://bucket/p", "--print-config"
    )
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout
    cluster = tomllib.loads(result.stdout)["cluster"]
    assert isinstance(cluster, dict)
    assert cluster["database"] == "postgresql://wharf:****@db.example:5432/wharf"
    assert "password hidden" in result.stdout


def test_a_bad_flag_value_is_named_by_its_flag() -> None:
    result = run_wharf("serve", "--kafka-port", "-5", "--print-config")
    assert result.returncode == 2
    assert "(from --kafka-port)" in result.stderr, result.stderr


_SERVE_HELP = (
    "import sys\n"
    "sys.argv = ['wharf', 'serve', '--help']\n"
    "from wharf.cli.main import main\n"
    "try:\n"
    "    main()\n"
    "except SystemExit:\n"
    "    pass\n"
)


def _after_serve_help(code: str) -> list[str]:
    """The lines a fresh interpreter prints running ``wharf serve --help`` through the entry
    point, then ``code``."""
    out = subprocess.run(
        [sys.executable, "-c", _SERVE_HELP + code], capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()


def test_serve_starts_without_the_other_commands_imports() -> None:
    """``wharf serve`` is parsed by the serve command alone: none of the other commands, nor
    their HTTP client, nor typer and pydantic, nor the metrics exporter is imported on the
    broker's way up; nor aiohttp and the HTTP API, which load at the first HTTP connection."""
    lines = _after_serve_help(
        "import wharf.cli.serve.http_listener\n"  # the HTTP front end, built at start
        "print(sorted(m for m in sys.modules if m in ('wharf.cli.app', 'wharf.cli.bench',"
        " 'wharf.cli.serve.command', 'httpx', 'prometheus_client', 'typer', 'pydantic',"
        " 'aiohttp', 'wharf.http.app')))"
    )
    assert "Usage: wharf serve [OPTIONS]" in lines
    assert lines[-1] == "['wharf.cli.serve.command']"


def test_serve_loads_kio_without_hypothesis() -> None:
    """kio imports hypothesis whenever it is installed (it is, here); a ``wharf serve``
    process blocks it, and the Kafka front end still loads."""
    assert importlib.util.find_spec("hypothesis") is not None  # or this would prove nothing
    lines = _after_serve_help(
        "from wharf.cli.serve.command import listener_factories\n"
        "listener_factories()\n"
        "import wharf.server.kafka.listener, kio.schema.metadata.v12.request\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kio', 'hypothesis')"
        " and sys.modules[m] is not None and m in ('kio', 'hypothesis',"
        " 'hypothesis.strategies')))"
    )
    assert lines[-1] == "['kio']"


def test_every_other_command_line_goes_to_the_whole_cli() -> None:
    result = run_wharf("--help")
    assert result.returncode == 0, result.stderr
    assert all(name in result.stdout for name in ("serve", "topic", "queue", "bench"))


def test_help_describes_every_option() -> None:
    result = run_wharf("serve", "--help")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:3] == ["Usage: wharf serve [OPTIONS]", "", f"  {SUMMARY}"]
    text = " ".join(result.stdout.split())
    for option in OPTIONS:
        assert option.help.strip()
        assert f"{option.flag} {option.metavar}" in text
        assert " ".join(option.help.split()) in text, option.flag
    assert "--print-config Print the effective settings as TOML and exit." in text
    assert "--help Show this message and exit." in text
    assert "--fsync <always|interval|never>" in text


def test_help_wins_over_bad_values_but_not_over_unknown_options() -> None:
    assert run_wharf("serve", "--kafka-port", "ninety", "--help").returncode == 0
    assert run_wharf("serve", "--bogus", "--help").returncode == 2


def _usage_error(*args: str) -> str:
    result = run_wharf("serve", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    usage, hint, blank, error = result.stderr.splitlines()
    assert (usage, hint, blank) == ("Usage: wharf serve [OPTIONS]", HINT, "")
    assert result.stdout == ""
    return error


HINT = "Try 'wharf serve --help' for help."


def test_command_line_errors_read_as_the_other_commands_do() -> None:
    assert _usage_error("--hots", "x") == "Error: No such option: --hots (Possible options: --host)"
    assert _usage_error("-h") == "Error: No such option: -h"
    assert _usage_error("--kafka-port") == "Error: Option '--kafka-port' requires an argument."
    assert _usage_error("--print-config=yes") == (
        "Error: Option '--print-config' does not take a value."
    )
    assert _usage_error("now") == "Error: Got unexpected extra argument(s) (now)"
    assert _usage_error("--", "--host") == "Error: Got unexpected extra argument(s) (--host)"
    assert _usage_error("--amqp-port=ninety") == (
        "Error: Invalid value for '--amqp-port': 'ninety' is not a valid integer."
    )
    assert _usage_error("--log-level", "INFO") == (
        "Error: Invalid value for '--log-level': 'INFO' is not one of 'debug', 'info', "
        "'warning', 'error'."
    )


def test_flag_forms_and_the_last_occurrence_wins() -> None:
    config = _print_config("--fsync", "NEVER", "--kafka-port=1234", "--kafka-port", "4321")
    assert config["broker"]["fsync"] == "never"  # type: ignore[index]
    assert config["server"]["kafka_port"] == 4321  # type: ignore[index]


def test_the_whole_cli_lists_serve_and_hands_it_the_command_line() -> None:
    runner = CliRunner()
    listed = runner.invoke(app, ["--help"])
    assert f"serve     {SUMMARY}" in listed.output
    printed = runner.invoke(app, ["serve", "--amqp-port", "2345", "--print-config"])
    assert printed.exit_code == 0, printed.output
    assert tomllib.loads(printed.output)["server"]["amqp_port"] == 2345
    refused = runner.invoke(app, ["serve", "--amqp-port", "many"])
    assert refused.exit_code == 2
