"""`wharf queue ...`: declare, list, describe, purge and delete AMQP queues."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from wharf.cli.client import (
    DEFAULT_URL,
    DurableOption,
    JsonOption,
    UrlOption,
    VhostFilterOption,
    VhostOption,
    WharfClient,
    parse_pairs,
    reporting_errors,
    segment,
)
from wharf.cli.output import counted, emit, print_fields, print_table, show_list

app = typer.Typer(help="Manage AMQP queues.", no_args_is_help=True)

ArgumentOption = Annotated[
    list[str] | None,
    typer.Option(
        "--argument", "-a", help="x-argument KEY=VALUE (integers stay integers; repeatable)."
    ),
]


def typed_arguments(pairs: list[str] | None) -> dict[str, Any]:
    """KEY=VALUE pairs with integer-looking values turned into integers."""
    result: dict[str, Any] = {}
    for key, value in parse_pairs(pairs, "--argument").items():
        result[key] = int(value) if value.lstrip("-").isdigit() else value
    return result


@app.command("declare")
def declare(
    name: str,
    priority_max: Annotated[
        int | None, typer.Option("--priority-max", min=1, max=255, help="x-max-priority")
    ] = None,
    message_ttl_ms: Annotated[
        int | None, typer.Option("--message-ttl", min=0, help="x-message-ttl in ms")
    ] = None,
    max_length: Annotated[
        int | None,
        typer.Option("--max-length", min=0, help="x-max-length: most ready messages."),
    ] = None,
    dead_letter_exchange: Annotated[
        str | None,
        typer.Option("--dead-letter-exchange", help="x-dead-letter-exchange."),
    ] = None,
    durable: DurableOption = True,
    auto_delete: Annotated[
        bool,
        typer.Option("--auto-delete", help="Delete when its last consumer goes."),
    ] = False,
    argument: ArgumentOption = None,
    vhost: VhostOption = "/",
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Declare a queue (idempotent when the arguments match)."""
    arguments = typed_arguments(argument)
    for key, value in (
        ("x-max-priority", priority_max),
        ("x-message-ttl", message_ttl_ms),
        ("x-max-length", max_length),
        ("x-dead-letter-exchange", dead_letter_exchange),
    ):
        if value is not None:
            arguments[key] = value
    with reporting_errors(), WharfClient(url) as client:
        body = {"durable": durable, "auto_delete": auto_delete, "arguments": arguments}
        queue = client.put(f"/api/queues/{segment(name)}", body, vhost=vhost)
    emit(as_json, queue, lambda: print(f"declared queue {name}"))


@app.command("list")
def list_queues(
    vhost: VhostFilterOption = None, url: UrlOption = DEFAULT_URL, as_json: JsonOption = False
) -> None:
    """List queues with depth, unacked, consumers and rates."""
    show_list(
        url,
        as_json,
        "/api/queues",
        [
            ("queue", "name"),
            ("ready", "messages"),
            ("unacked", "unacked"),
            ("consumers", "consumers"),
            ("publish/s", "publish_per_s"),
            ("deliver/s", "deliver_per_s"),
            ("ack/s", "ack_per_s"),
        ],
        vhost=vhost,
    )


@app.command("describe")
def describe(
    name: str, vhost: VhostOption = "/", url: UrlOption = DEFAULT_URL, as_json: JsonOption = False
) -> None:
    """Everything about one queue: settings, counts, rates, bindings and consumers."""
    with reporting_errors(), WharfClient(url) as client:
        queue: dict[str, Any] = client.get(f"/api/queues/{segment(name)}", vhost=vhost)

    def human() -> None:
        lists = ("bindings", "consumer_details")
        print_fields(f"Queue {name}", [(k, v) for k, v in queue.items() if k not in lists])
        print_table(
            "Bindings",
            [("exchange", "source"), ("routing key", "routing_key"), ("arguments", "arguments")],
            queue.get("bindings", []),
        )
        print_table(
            "Consumers",
            [
                ("tag", "tag"),
                ("ack required", "ack_required"),
                ("exclusive", "exclusive"),
                ("active", "active"),
            ],
            queue.get("consumer_details", []),
        )

    emit(as_json, queue, human)


@app.command("purge")
def purge(name: str, vhost: VhostOption = "/", url: UrlOption = DEFAULT_URL) -> None:
    """Remove every ready message from a queue."""
    with reporting_errors(), WharfClient(url) as client:
        result = client.post(f"/api/queues/{segment(name)}/purge", vhost=vhost)
    print(f"purged {counted(result['purged'], 'message')} from queue {name}")


@app.command("delete")
def delete(
    name: str,
    if_empty: Annotated[
        bool,
        typer.Option("--if-empty", help="Refuse while it holds ready messages."),
    ] = False,
    if_unused: Annotated[
        bool,
        typer.Option("--if-unused", help="Refuse while it has consumers."),
    ] = False,
    vhost: VhostOption = "/",
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Delete a queue."""
    with reporting_errors(), WharfClient(url) as client:
        client.delete(
            f"/api/queues/{segment(name)}",
            vhost=vhost,
            if_empty=str(if_empty).lower(),
            if_unused=str(if_unused).lower(),
        )
    print(f"deleted queue {name}")
