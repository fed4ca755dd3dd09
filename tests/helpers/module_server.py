"""What the CLI and HTTP API test packages share: one ``wharf serve`` process per test module
and a per-test name, so that tests sharing that server never see each other's objects."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from helpers.broker_process import WharfProcess


@contextmanager
def module_server(tmp_path_factory: pytest.TempPathFactory, prefix: str) -> Iterator[WharfProcess]:
    """A started server (no initial rebalance delay, so consumer groups form quickly), stopped
    on exit if it still runs."""
    base = tmp_path_factory.mktemp(prefix)
    process = WharfProcess(
        base / "data",
        (),
        log_dir=base / "logs",
        env={"WHARF_GROUP_INITIAL_REBALANCE_DELAY_MS": "0"},
    )
    process.start()
    try:
        yield process
    finally:
        if process.running:
            process.terminate()


def unique_name(request: pytest.FixtureRequest) -> str:
    """A name no other test of the module uses (safe for topics, queues, groups)."""
    return request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:200]
