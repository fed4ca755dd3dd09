"""What a running broker reports about one protocol's clients, read back for tests: its
``wharf_request_seconds`` histograms at /metrics and its connection log lines."""

from __future__ import annotations

import re

import httpx
from prometheus_client.parser import text_string_to_metric_families

from helpers.broker_process import WharfProcess


def request_histograms(
    server: WharfProcess, protocol: str, documentation_mentions: str
) -> dict[str, dict[str, float]]:
    """Operation of ``protocol`` -> {"count", "sum", "inf"} from ``wharf_request_seconds``,
    checking that the family's help text mentions ``documentation_mentions`` and that each
    histogram's buckets are cumulative and end at its count."""
    text = httpx.get(f"{server.http_url}/metrics", timeout=30).text
    found: dict[str, dict[str, float]] = {}
    buckets: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name != "wharf_request_seconds":
            continue
        assert family.type == "histogram"
        assert documentation_mentions in family.documentation
        for sample in family.samples:
            if sample.labels["protocol"] != protocol:
                continue
            operation = sample.labels["operation"]
            entry = found.setdefault(operation, {})
            if sample.name.endswith("_bucket"):
                buckets.setdefault(operation, []).append(sample.value)
                if sample.labels["le"] == "+Inf":
                    entry["inf"] = sample.value
            elif sample.name.endswith("_count"):
                entry["count"] = sample.value
            elif sample.name.endswith("_sum"):
                entry["sum"] = sample.value
    for operation, values in buckets.items():
        assert values == sorted(values), operation
        assert found[operation]["inf"] == found[operation]["count"], operation
    return found


def connection_lines(server: WharfProcess, protocol: str) -> list[re.Match[str]]:
    """The server log's "<protocol> connection N opened|closed..." lines, with groups
    ``level``, ``conn``, ``event`` and ``rest``."""
    pattern = re.compile(
        r"^\S+ (?P<level>[A-Z]+) wharf\.connections: "
        rf"{protocol} connection (?P<conn>\d+) (?P<event>opened|closed)(?P<rest>.*)$",
        re.MULTILINE,
    )
    return list(pattern.finditer(server.log_text()))
