"""Fixtures shared by the whole suite.

``wharf_server``: a fresh ``wharf serve`` subprocess on a temporary data directory, every listener
on 127.0.0.1 with a free port; see :class:`helpers.broker_process.WharfProcess` for its API
(``.kafka_port``, ``.amqp_port``, ``.http_port``, ``.kafka_bootstrap``, ``.http_url``,
``.data_dir``, ``.pid``, ``.log_text()``, ``.terminate()``, ``.kill()``, ``.restart()``).

``start_wharf(*args, data_dir=None, env=None, wait_ready=True)``: the same with extra
``wharf serve`` flags (``"--fsync", "never"``), a chosen data directory or ``WHARF_*``
variables; call it as often as needed. Every process still running at the end of the test is
sent SIGTERM, and the test errors if it does not exit with code 0. Servers started this way give
open connections 5 s to finish on SIGTERM (``WHARF_SHUTDOWN_TIMEOUT_MS=5000``) unless ``env``
says otherwise.

A run with skipped tests fails (exit code 1): a skip must never pass for a success. Set
``WHARF_ALLOW_SKIPS=1`` to let skips through when working on a machine without kcat or similar.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from helpers.broker_process import WharfProcess

# The cluster's engines (PostgreSQL, an S3 server), for tests/cluster and the core's cluster tests.
pytest_plugins = ["helpers.cluster_fixtures"]

StartWharf = Callable[..., WharfProcess]


def _skipped_count(config: pytest.Config) -> int:
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    return len(reporter.stats.get("skipped", [])) if reporter is not None else 0


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    allowed = os.environ.get("WHARF_ALLOW_SKIPS")
    if exitstatus == pytest.ExitCode.OK and _skipped_count(session.config) and not allowed:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, config: pytest.Config
) -> None:
    skipped = _skipped_count(config)
    if skipped and not os.environ.get("WHARF_ALLOW_SKIPS"):
        terminalreporter.write_sep(
            "!", f"{skipped} test(s) skipped: the run fails (WHARF_ALLOW_SKIPS=1 allows skips)"
        )


@pytest.fixture
def start_wharf(tmp_path: Path) -> Iterator[StartWharf]:
    started: list[WharfProcess] = []

    def start(
        *args: str,
        data_dir: Path | None = None,
        env: Mapping[str, str] | None = None,
        wait_ready: bool = True,
    ) -> WharfProcess:
        n = len(started) + 1
        if data_dir is None:
            data_dir = tmp_path / ("wharf-data" if n == 1 else f"wharf-data-{n}")
        process = WharfProcess(data_dir, args, log_dir=tmp_path / f"wharf-logs-{n}", env=env)
        started.append(process)
        process.start(wait_ready=wait_ready)
        return process

    try:
        yield start
    finally:
        problems = [p for p in (process.cleanup() for process in started) if p]
        if problems:
            pytest.fail("\n\n".join(problems), pytrace=False)


@pytest.fixture
def wharf_server(start_wharf: StartWharf) -> WharfProcess:
    return start_wharf()
