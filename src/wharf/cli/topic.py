"""`wharf topic ...`: create, list, describe, alter and delete topics."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from wharf.cli.client import (
    DEFAULT_URL,
    CliError,
    JsonOption,
    UrlOption,
    WharfClient,
    parse_pairs,
    reporting_errors,
    segment,
)
from wharf.cli.output import counted, emit, print_fields, print_table, show_list

app = typer.Typer(help="Manage topics (streams).", no_args_is_help=True)

ConfigOption = Annotated[
    list[str] | None,
    typer.Option("--config", "-c", help="Topic setting KEY=VALUE (repeatable)."),
]


@app.command("create")
def create(
    name: str,
    partitions: Annotated[
        int | None,
        typer.Option("--partitions", "-p", min=1, help="Number of partitions."),
    ] = None,
    config: ConfigOption = None,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Create a topic."""
    with reporting_errors(), WharfClient(url) as client:
        body = {"name": name, "partitions": partitions, "configs": parse_pairs(config, "--config")}
        topic = client.post("/api/topics", body)
    emit(
        as_json,
        topic,
        lambda: print(f"created topic {name} ({counted(topic['partition_count'], 'partition')})"),
    )


@app.command("list")
def list_topics(url: UrlOption = DEFAULT_URL, as_json: JsonOption = False) -> None:
    """List topics with partition counts, messages and bytes."""
    show_list(
        url,
        as_json,
        "/api/topics",
        [
            ("topic", "name"),
            ("partitions", "partition_count"),
            ("messages", "messages"),
            ("bytes", "bytes"),
        ],
    )


@app.command("describe")
def describe(name: str, url: UrlOption = DEFAULT_URL, as_json: JsonOption = False) -> None:
    """Partitions (offsets, sizes), consumer groups with lag, and configs of a topic."""
    with reporting_errors(), WharfClient(url) as client:
        topic: dict[str, Any] = client.get(f"/api/topics/{segment(name)}")

    def human() -> None:
        print_fields(
            f"Topic {name}",
            [("id", topic["topic_id"]), ("messages", topic["messages"]), ("bytes", topic["bytes"])],
        )
        print_table(
            "Partitions",
            [
                ("partition", "partition"),
                ("start offset", "log_start_offset"),
                ("high watermark", "high_watermark"),
                ("messages", "messages"),
                ("bytes", "bytes"),
            ],
            topic["partitions"],
        )
        print_table(
            "Consumer groups",
            [("group", "group"), ("lag", "lag")],
            topic["groups"],
        )
        print_table(
            "Configs",
            [("name", lambda c: c[0]), ("value", lambda c: c[1])],
            sorted(topic["configs"].items()),
        )

    emit(as_json, topic, human)


@app.command("alter")
def alter(
    name: str,
    config: ConfigOption = None,
    reset: Annotated[
        list[str] | None,
        typer.Option("--reset", help="Return a setting to the broker default (repeatable)."),
    ] = None,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Change topic settings."""
    with reporting_errors(), WharfClient(url) as client:
        changes: dict[str, str | None] = dict(parse_pairs(config, "--config"))
        changes.update({key: None for key in reset or []})
        if not changes:
            raise CliError("nothing to change: give --config KEY=VALUE or --reset KEY")
        topic = client.patch(f"/api/topics/{segment(name)}/configs", {"configs": changes})
    emit(
        as_json,
        topic,
        lambda: print(
            f"altered topic {name}: " + ", ".join(f"{k}={v}" for k, v in changes.items())
        ),
    )


@app.command("delete")
def delete(name: str, url: UrlOption = DEFAULT_URL) -> None:
    """Delete a topic and its data."""
    with reporting_errors(), WharfClient(url) as client:
        client.delete(f"/api/topics/{segment(name)}")
    print(f"deleted topic {name}")
