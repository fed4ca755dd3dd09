"""`wharf status`: the broker's overview in one screen."""

from __future__ import annotations

from typing import Any

from wharf.cli.client import DEFAULT_URL, JsonOption, UrlOption, WharfClient, reporting_errors
from wharf.cli.output import emit, print_fields, print_table


def status(url: UrlOption = DEFAULT_URL, as_json: JsonOption = False) -> None:
    """Show version, uptime, listeners, totals and current rates of a running broker."""
    with reporting_errors(), WharfClient(url) as client:
        overview: dict[str, Any] = client.get("/api/overview")

    def human() -> None:
        totals, rates = overview["totals"], overview["rates"]
        print_fields(
            f"Wharf {overview['version']} at {url}",
            [
                ("uptime", f"{overview['uptime_s']:.0f} s"),
                ("data directory", overview["data_dir"]),
                ("fsync", overview["fsync"]),
                ("topics / partitions", f"{totals['topics']} / {totals['partitions']}"),
                ("consumer groups", totals["groups"]),
                ("queues / exchanges", f"{totals['queues']} / {totals['exchanges']}"),
                ("queued messages", totals["queue_depth"]),
                ("consumer lag", totals["consumer_lag"]),
                ("connections", totals["connections"]),
                ("storage bytes", totals["storage_bytes"]),
                ("published / s", rates["publish_per_s"]),
                ("delivered / s", rates["deliver_per_s"]),
            ],
        )
        print_table(
            "Listeners",
            [
                ("name", "name"),
                ("address", lambda r: f"{r['host']}:{r['port']}"),
                ("ready", "ready"),
            ],
            overview["listeners"],
        )

    emit(as_json, overview, human)
