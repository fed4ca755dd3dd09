"""`wharf binding ...`: bind and unbind queues (or exchanges) to exchanges."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from wharf.cli.client import (
    DEFAULT_URL,
    JsonOption,
    UrlOption,
    VhostOption,
    WharfClient,
    reporting_errors,
)
from wharf.cli.output import emit, print_table
from wharf.cli.queue import ArgumentOption, typed_arguments

app = typer.Typer(help="Manage bindings between exchanges and queues.", no_args_is_help=True)

RoutingKey = Annotated[str, typer.Option("--routing-key", "-k")]
ToExchange = Annotated[
    bool, typer.Option("--to-exchange", help="The destination is an exchange, not a queue.")
]


def _body(
    source: str, destination: str, routing_key: str, to_exchange: bool, argument: list[str] | None
) -> dict[str, Any]:
    return {
        "source": source,
        "destination": destination,
        "destination_type": "exchange" if to_exchange else "queue",
        "routing_key": routing_key,
        "arguments": typed_arguments(argument),
    }


@app.command("create")
def create(
    source: str,
    destination: str,
    routing_key: RoutingKey = "",
    to_exchange: ToExchange = False,
    argument: ArgumentOption = None,
    vhost: VhostOption = "/",
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Bind DESTINATION (a queue) to the exchange SOURCE."""
    with reporting_errors(), WharfClient(url) as client:
        client.post(
            "/api/bindings",
            _body(source, destination, routing_key, to_exchange, argument),
            vhost=vhost,
        )
    print(f"bound {destination} to {source} with key {routing_key!r}")


@app.command("delete")
def delete(
    source: str,
    destination: str,
    routing_key: RoutingKey = "",
    to_exchange: ToExchange = False,
    argument: ArgumentOption = None,
    vhost: VhostOption = "/",
    url: UrlOption = DEFAULT_URL,
) -> None:
    """Remove the binding of DESTINATION to SOURCE with that routing key."""
    with reporting_errors(), WharfClient(url) as client:
        client.delete(
            "/api/bindings",
            _body(source, destination, routing_key, to_exchange, argument),
            vhost=vhost,
        )
    print(f"unbound {destination} from {source} (key {routing_key!r})")


@app.command("list")
def list_bindings(
    vhost: Annotated[str | None, typer.Option("--vhost", help="Only this vhost.")] = None,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """List bindings."""
    with reporting_errors(), WharfClient(url) as client:
        bindings: list[dict[str, Any]] = client.get("/api/bindings", vhost=vhost)
    emit(
        as_json,
        bindings,
        lambda: print_table(
            None,
            [
                ("source", lambda b: b["source"] or "(default)"),
                ("destination", lambda b: b["destination"]),
                ("type", lambda b: b["destination_type"]),
                ("routing key", lambda b: b["routing_key"]),
                ("arguments", lambda b: b["arguments"]),
            ],
            bindings,
        ),
    )
