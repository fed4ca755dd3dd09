"""`wharf group ...`: consumer groups, their lag, offset resets and deletion."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from wharf.cli.client import (
    DEFAULT_URL,
    CliError,
    JsonOption,
    UrlOption,
    WharfClient,
    reporting_errors,
    segment,
)
from wharf.cli.output import emit, print_fields, print_table, show_list

app = typer.Typer(help="Inspect and manage Kafka consumer groups.", no_args_is_help=True)


@app.command("list")
def list_groups(url: UrlOption = DEFAULT_URL, as_json: JsonOption = False) -> None:
    """List consumer groups with state, member count and total lag."""
    show_list(
        url,
        as_json,
        "/api/groups",
        [("group", "group"), ("state", "state"), ("members", "members"), ("lag", "lag")],
    )


@app.command("describe")
def describe(group: str, url: UrlOption = DEFAULT_URL, as_json: JsonOption = False) -> None:
    """Members, assignments, committed offsets and lag per partition."""
    with reporting_errors(), WharfClient(url) as client:
        detail: dict[str, Any] = client.get(f"/api/groups/{segment(group)}")

    def human() -> None:
        print_fields(
            f"Group {group}",
            [
                ("state", detail["state"]),
                ("protocol", detail["protocol"] or None),
                ("lag", detail["lag"]),
            ],
        )
        print_table(
            "Members",
            [
                ("member", "member_id"),
                ("client", "client_id"),
                ("host", "client_host"),
                (
                    "assignment",
                    lambda m: " ".join(
                        f"{a['topic']}[{','.join(map(str, a['partitions']))}]"
                        for a in m["assignments"]
                    ),
                ),
            ],
            detail["members"],
        )
        print_table(
            "Offsets",
            [
                ("topic", "topic"),
                ("partition", "partition"),
                ("committed", "committed"),
                ("high watermark", "high_watermark"),
                ("lag", "lag"),
            ],
            detail["offsets"],
        )

    emit(as_json, detail, human)


def _timestamp_ms(value: str) -> int:
    """Milliseconds since the epoch, or an ISO 8601 time (UTC unless an offset is given)."""
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise CliError(
            f"--to-timestamp takes epoch milliseconds or ISO 8601, got {value!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.now().astimezone().tzinfo)
    return int(moment.timestamp() * 1000)


@app.command("reset-offsets")
def reset_offsets(
    group: str,
    topic: Annotated[str | None, typer.Option("--topic", "-t", help="Only this topic.")] = None,
    partition: Annotated[
        list[int] | None, typer.Option("--partition", help="Only these partitions (repeatable).")
    ] = None,
    to_earliest: Annotated[
        bool,
        typer.Option("--to-earliest", help="To each partition's log start."),
    ] = False,
    to_latest: Annotated[
        bool,
        typer.Option("--to-latest", help="To each partition's end."),
    ] = False,
    to_timestamp: Annotated[
        str | None,
        typer.Option("--to-timestamp", help="Epoch ms or ISO 8601 time (local zone if none)."),
    ] = None,
    to_offset: Annotated[
        int | None,
        typer.Option("--to-offset", min=0, help="To this offset."),
    ] = None,
    execute: Annotated[
        bool, typer.Option("--execute", help="Apply the change; without it, a dry run.")
    ] = False,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Move a group's committed offsets. Prints the plan; changes nothing without --execute."""
    with reporting_errors(), WharfClient(url) as client:
        chosen = [
            name
            for name, given in (
                ("earliest", to_earliest),
                ("latest", to_latest),
                ("timestamp", to_timestamp is not None),
                ("offset", to_offset is not None),
            )
            if given
        ]
        if len(chosen) != 1:
            raise CliError(
                "give exactly one of --to-earliest, --to-latest, --to-timestamp, --to-offset"
            )
        body: dict[str, Any] = {"to": chosen[0], "execute": execute, "topic": topic}
        if partition:
            body["partitions"] = partition
        if to_timestamp is not None:
            body["timestamp_ms"] = _timestamp_ms(to_timestamp)
        if to_offset is not None:
            body["offset"] = to_offset
        result: dict[str, Any] = client.post(f"/api/groups/{segment(group)}/reset-offsets", body)

    def human() -> None:
        verb = "reset" if result["executed"] else "would reset (dry run; add --execute)"
        print_table(
            f"Group {group}: {verb}",
            [
                ("topic", "topic"),
                ("partition", "partition"),
                ("current", "current"),
                ("new", "new"),
            ],
            result["changes"],
        )

    emit(as_json, result, human)


@app.command("delete")
def delete(group: str, url: UrlOption = DEFAULT_URL) -> None:
    """Delete an empty consumer group and its committed offsets."""
    with reporting_errors(), WharfClient(url) as client:
        client.delete(f"/api/groups/{segment(group)}")
    print(f"deleted group {group}")
