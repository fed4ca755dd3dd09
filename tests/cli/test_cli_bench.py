"""`wharf bench` through the HTTP API and through the Kafka port (confluent-kafka): every
message produced is consumed back, the summary carries rates and latency percentiles, and the
bench topic is removed afterwards unless --keep."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from click.testing import Result

RunCli = Callable[..., Result]


@pytest.mark.parametrize("via", ["http", "kafka"])
def test_bench_produces_and_consumes_everything(wharf: RunCli, via: str, unique: str) -> None:
    count = 300 if via == "http" else 3000
    result = wharf("bench", "--via", via, "--messages", str(count), "--size", "64", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["via"] == via
    produce, consume = summary["phases"]
    assert produce["phase"] == "produce" and produce["messages"] == count
    assert consume["phase"] == "consume" and consume["messages"] == count
    assert produce["msg_per_s"] > 0 and produce["mb_per_s"] > 0
    assert 0 < produce["p50_ms"] <= produce["p95_ms"] <= produce["p99_ms"] <= produce["max_ms"]
    topics = json.loads(wharf("topic", "list", "--json").stdout)
    assert summary["topic"] not in {t["name"] for t in topics}


def test_bench_keeps_a_named_topic(wharf: RunCli, unique: str) -> None:
    result = wharf("bench", "--via", "http", "--messages", "50", "--topic", unique, "--keep")
    assert result.exit_code == 0, result.output
    assert "msg/s" in result.stdout
    detail = json.loads(wharf("topic", "describe", unique, "--json").stdout)
    assert detail["messages"] == 50
