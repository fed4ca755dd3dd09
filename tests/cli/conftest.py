"""A ``wharf serve`` process per CLI test module, and a runner for ``wharf`` commands.

Commands run in-process through typer's CliRunner (fast: no interpreter start per command)
with ``--url`` pointing at the running server; a few tests run the real ``wharf`` executable
as a subprocess to check exit codes and stderr exactly as a shell sees them."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from click.testing import Result
from typer.testing import CliRunner

from helpers.broker_process import WharfProcess
from helpers.module_server import module_server, unique_name
from wharf.cli.app import app

RunCli = Callable[..., Result]


@pytest.fixture(scope="module")
def cli_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WharfProcess]:
    with module_server(tmp_path_factory, "wharf-cli") as process:
        yield process


@pytest.fixture
def wharf(cli_server: WharfProcess) -> RunCli:
    """``wharf(*args, input=None)``: run a command against the server; returns click's Result."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Result:
        return runner.invoke(app, [*args, "--url", cli_server.http_url], input=input)

    return run


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    return unique_name(request)
