"""Rough edges a newcomer met, through the real ``wharf`` entry point: ``--version``, ``user
add`` without a terminal, ``--data-dir`` naming a file."""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from click.testing import Result

from helpers.broker_process import WharfProcess, run_wharf

RunCli = Callable[..., Result]


def test_version_prints_and_exits_zero() -> None:
    result = run_wharf("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wharf {version('wharf')}"


def test_user_add_without_a_terminal_asks_for_the_password_flag() -> None:
    result = run_wharf("user", "add", "bob", "--url", "http://127.0.0.1:9")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "--password" in result.stderr
    assert "Warning" not in result.stderr


def test_user_add_with_the_password_flag(wharf: RunCli, unique: str) -> None:
    saved: Result = wharf("user", "add", unique, "--password", "s3cret")
    assert saved.exit_code == 0, saved.output
    assert f"user {unique} saved" in saved.stdout


def test_a_data_dir_that_is_a_file_is_named_as_such(tmp_path: Path) -> None:
    a_file = tmp_path / "not-a-dir"
    a_file.write_text("x")
    result = run_wharf(
        "serve", "--data-dir", str(a_file), "--kafka-port", "0", "--amqp-port", "0",
        "--http-port", "0", timeout=60,
    )
    assert result.returncode != 0
    assert f"cannot use data directory {a_file}: it is not a directory" in result.stderr


def test_the_cli_finds_the_broker_by_the_serve_settings(cli_server: WharfProcess) -> None:
    """Started with WHARF_HTTP_PORT (as `make run` is), the broker is found by the commands
    run with the same environment, without --url or WHARF_URL."""
    port = cli_server.http_url.rsplit(":", 1)[1]
    result = run_wharf("status", "--json", env={"WHARF_HTTP_PORT": port})
    assert result.returncode == 0, result.stderr
    elsewhere = run_wharf("status", env={"WHARF_HTTP_PORT": "9", "WHARF_HOST": "0.0.0.0"})
    assert elsewhere.returncode == 1
    assert "cannot reach the broker at http://127.0.0.1:9" in elsewhere.stderr
