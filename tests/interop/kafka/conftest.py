"""Fixtures for driving ``wharf serve`` with real Kafka clients over loopback.

``kafka_server`` is one ``wharf serve`` subprocess shared by the tests of a module (each test
uses its own topic and group names); tests that kill or restart the server use
``start_wharf`` from the top-level conftest instead. Groups form quickly
(``group.initial.rebalance.delay`` 0) and short session timeouts are allowed, so that tests
which are not about those timings do not wait for them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from helpers.broker_process import WharfProcess

FAST_GROUPS = {
    "WHARF_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
    "WHARF_GROUP_MIN_SESSION_TIMEOUT_MS": "1000",
}


@pytest.fixture(scope="module")
def kafka_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WharfProcess]:
    base = tmp_path_factory.mktemp("wharf-kafka")
    process = WharfProcess(base / "data", log_dir=base / "logs", env=FAST_GROUPS)
    process.start()
    try:
        yield process
    finally:
        problem = process.cleanup()
        if problem:
            pytest.fail(problem, pytrace=False)


@pytest.fixture
def bootstrap(kafka_server: WharfProcess) -> str:
    return kafka_server.kafka_bootstrap


@pytest.fixture
def topic_name() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def group_name() -> str:
    return f"g-{uuid.uuid4().hex[:10]}"
