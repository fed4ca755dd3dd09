"""`wharf exchange ...`: declare, list and delete AMQP exchanges."""

from __future__ import annotations

from typing import Annotated

import typer

from wharf.cli.client import (
    DEFAULT_URL,
    DurableOption,
    JsonOption,
    UrlOption,
    VhostFilterOption,
    VhostOption,
    WharfClient,
    reporting_errors,
    segment,
)
from wharf.cli.output import emit, show_list
from wharf.cli.queue import ArgumentOption, typed_arguments

app = typer.Typer(help="Manage AMQP exchanges.", no_args_is_help=True)


@app.command("declare")
def declare(
    name: str,
    kind: Annotated[
        str, typer.Option("--type", "-t", help="direct, fanout, topic, headers, ...")
    ] = "direct",
    durable: DurableOption = True,
    auto_delete: Annotated[
        bool,
        typer.Option("--auto-delete", help="Delete when its last binding goes."),
    ] = False,
    internal: Annotated[
        bool,
        typer.Option("--internal", help="Only other exchanges may publish to it."),
    ] = False,
    argument: ArgumentOption = None,
    vhost: VhostOption = "/",
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Declare an exchange (idempotent when the arguments match)."""
    with reporting_errors(), WharfClient(url) as client:
        body = {
            "type": kind,
            "durable": durable,
            "auto_delete": auto_delete,
            "internal": internal,
            "arguments": typed_arguments(argument),
        }
        exchange = client.put(f"/api/exchanges/{segment(name)}", body, vhost=vhost)
    emit(as_json, exchange, lambda: print(f"declared {kind} exchange {name}"))


@app.command("list")
def list_exchanges(
    vhost: VhostFilterOption = None, url: UrlOption = DEFAULT_URL, as_json: JsonOption = False
) -> None:
    """List exchanges."""
    show_list(
        url,
        as_json,
        "/api/exchanges",
        [
            ("vhost", "vhost"),
            ("exchange", lambda x: x["name"] or "(default)"),
            ("type", "type"),
            ("durable", "durable"),
            ("arguments", "arguments"),
        ],
        vhost=vhost,
    )


@app.command("delete")
def delete(
    name: str,
    if_unused: Annotated[
        bool,
        typer.Option("--if-unused", help="Refuse while it has bindings."),
    ] = False,
    vhost: VhostOption = "/",
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Delete an exchange and its bindings."""
    with reporting_errors(), WharfClient(url) as client:
        client.delete(
            f"/api/exchanges/{segment(name)}", vhost=vhost, if_unused=str(if_unused).lower()
        )
    print(f"deleted exchange {name}")
