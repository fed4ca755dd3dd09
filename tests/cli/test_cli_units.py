"""Pure helpers of the CLI: percentiles, KEY=VALUE parsing, typed x-arguments."""

from __future__ import annotations

import pytest

from wharf.cli.bench import Phase, percentile
from wharf.cli.client import CliError, parse_pairs, segment
from wharf.cli.queue import typed_arguments


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50
    assert percentile(values, 0.99) == 99
    assert percentile(values, 1.0) == 100
    assert percentile([7.0], 0.95) == 7
    summary = Phase(
        "produce",
        messages=4,
        payload_bytes=4_000_000,
        seconds=2.0,
        latencies_ms=[1.0, 2.0, 3.0, 4.0],
    ).summary()
    assert summary["msg_per_s"] == 2.0
    assert summary["mb_per_s"] == 2.0
    assert summary["p50_ms"] == 2.0 and summary["max_ms"] == 4.0


def test_pairs_and_arguments() -> None:
    assert parse_pairs(["a=1", "b=x=y", "c="], "--config") == {"a": "1", "b": "x=y", "c": ""}
    with pytest.raises(CliError, match="KEY=VALUE"):
        parse_pairs(["novalue"], "--config")
    with pytest.raises(CliError):
        parse_pairs(["=v"], "--config")
    assert typed_arguments(["x-max-length=10", "x-dead-letter-exchange=dlx", "x-n=-3"]) == {
        "x-max-length": 10,
        "x-dead-letter-exchange": "dlx",
        "x-n": -3,
    }
    assert segment("a/b c") == "a%2Fb%20c"

