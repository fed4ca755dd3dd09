"""`wharf binding ...`: bind and unbind queues (or exchanges) to exchanges."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer

from wharf.cli.client import (
    DEFAULT_URL,
    JsonOption,
    UrlOption,
    VhostFilterOption,
    VhostOption,
    WharfClient,
    reporting_errors,
)
from wharf.cli.output import show_list
from wharf.cli.queue import ArgumentOption, typed_arguments

app = typer.Typer(help="Manage bindings between exchanges and queues.", no_args_is_help=True)

RoutingKey = Annotated[
    str,
    typer.Option("--routing-key", "-k", help="Binding key (topic patterns for topic exchanges)."),
]
ToExchange = Annotated[
    bool, typer.Option("--to-exchange", help="The destination is an exchange, not a queue.")
]


def _binding_command(send: Callable[..., Any], done: str, doc: str) -> Callable[..., None]:
    """A command that sends one binding to /api/bindings with ``send`` (POST binds, DELETE
    unbinds), then prints ``done`` formatted with the source, destination and key."""

    def command(
        source: str,
        destination: str,
        routing_key: RoutingKey = "",
        to_exchange: ToExchange = False,
        argument: ArgumentOption = None,
        vhost: VhostOption = "/",
        url: UrlOption = DEFAULT_URL,
    ) -> None:
        body = {
            "source": source,
            "destination": destination,
            "destination_type": "exchange" if to_exchange else "queue",
            "routing_key": routing_key,
            "arguments": typed_arguments(argument),
        }
        with reporting_errors(), WharfClient(url) as client:
            send(client, "/api/bindings", body, vhost=vhost)
        print(done.format(source=source, destination=destination, key=routing_key))

    command.__doc__ = doc
    return command


app.command("create")(
    _binding_command(
        WharfClient.post,
        "bound {destination} to {source} with key {key!r}",
        "Bind DESTINATION (a queue) to the exchange SOURCE.",
    )
)
app.command("delete")(
    _binding_command(
        WharfClient.delete,
        "unbound {destination} from {source} (key {key!r})",
        "Remove the binding of DESTINATION to SOURCE with that routing key.",
    )
)


@app.command("list")
def list_bindings(
    vhost: VhostFilterOption = None, url: UrlOption = DEFAULT_URL, as_json: JsonOption = False
) -> None:
    """List bindings."""
    show_list(
        url,
        as_json,
        "/api/bindings",
        [
            ("source", lambda b: b["source"] or "(default)"),
            ("destination", "destination"),
            ("type", "destination_type"),
            ("routing key", "routing_key"),
            ("arguments", "arguments"),
        ],
        vhost=vhost,
    )
