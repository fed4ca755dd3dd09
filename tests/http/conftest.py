"""One ``wharf serve`` process per test module for the HTTP API tests (names are unique per
test, so tests do not see each other's objects), and an HTTP client bound to it."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from helpers.broker_process import WharfProcess
from helpers.module_server import module_server, unique_name


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WharfProcess]:
    with module_server(tmp_path_factory, "wharf-http") as process:
        yield process


@pytest.fixture
def api(http_server: WharfProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=http_server.http_url, timeout=30.0) as client:
        yield client


@pytest.fixture
def unique(request: pytest.FixtureRequest) -> str:
    """A name no other test of the module uses (safe for topics, queues, groups)."""
    return unique_name(request)
