"""One ``wharf serve`` process per test module for the HTTP API tests (names are unique per
test, so tests do not see each other's objects), and an HTTP client bound to it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from helpers.broker_process import WharfProcess


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WharfProcess]:
    base = tmp_path_factory.mktemp("wharf-http")
    # no initial rebalance delay, so consumer groups form quickly in the group tests
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


@pytest.fixture
def api(http_server: WharfProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=http_server.http_url, timeout=30.0) as client:
        yield client


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A name no other test of the module uses (safe for topics, queues, groups)."""
    return request.node.name.replace("[", "-").replace("]", "").replace("_", "-")[:200]
