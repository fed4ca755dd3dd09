"""`wharf produce NAME`: publish stdin to a topic, a queue or an exchange, one message a line.

Plain lines become message values. With ``--json`` each line is an object with ``value`` and
optionally ``key``, ``headers``, ``partition``, ``routing_key``, ``encoding`` (utf8/base64) and
``properties``; the result of each publish (partition, offset) is printed as a JSON line.
Messages that an exchange could not route anywhere are counted, and the command then fails
(exit 1) saying how many: they were not stored.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from wharf.cli.client import (
    DEFAULT_URL,
    CliError,
    UrlOption,
    VhostOption,
    WharfClient,
    parse_pairs,
    reporting_errors,
    segment,
)
from wharf.cli.output import counted
from wharf.cli.target import Kind, resolve

KindOption = Annotated[
    Kind, typer.Option("--kind", help="What NAME is; auto looks for a topic, queue, exchange.")
]

_FIELDS = {"value", "key", "headers", "partition", "routing_key", "encoding", "properties"}


def _message(line: str, as_json: bool, defaults: dict[str, Any], number: int) -> dict[str, Any]:
    if not as_json:
        return {**defaults, "value": line}
    try:
        parsed = json.loads(line)
    except ValueError as exc:
        raise CliError(f"line {number}: not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise CliError(f"line {number}: expected a JSON object")
    unknown = set(parsed) - _FIELDS
    if unknown:
        raise CliError(f"line {number}: unknown fields {', '.join(sorted(unknown))}")
    return {**defaults, **parsed}


def produce(
    name: str,
    kind: KindOption = Kind.AUTO,
    key: Annotated[str | None, typer.Option("--key", "-k", help="Record key (topics).")] = None,
    partition: Annotated[
        int | None,
        typer.Option("--partition", "-p", min=0, help="Partition (topics; default: by key)."),
    ] = None,
    routing_key: Annotated[
        str | None, typer.Option("--routing-key", "-r", help="Routing key (exchanges).")
    ] = None,
    header: Annotated[
        list[str] | None, typer.Option("--header", "-H", help="KEY=VALUE (repeatable).")
    ] = None,
    vhost: VhostOption = "/",
    url: UrlOption = DEFAULT_URL,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="Read stdin as JSON lines (value, key, headers, partition, routing_key, "
            "encoding, properties) and print each publish's result as a JSON line.",
        ),
    ] = False,
) -> None:
    """Publish each line of stdin as one message to the topic, queue or exchange NAME."""
    produced = unroutable = 0
    with reporting_errors(), WharfClient(url) as client:
        resolved = resolve(client, name, kind, vhost, {Kind.TOPIC, Kind.QUEUE, Kind.EXCHANGE})
        defaults: dict[str, Any] = {"headers": parse_pairs(header, "--header")}
        if key is not None:
            defaults["key"] = key
        if partition is not None:
            defaults["partition"] = partition
        if routing_key is not None:
            defaults["routing_key"] = routing_key
        paths = {
            Kind.TOPIC: f"/api/topics/{segment(name)}/messages",
            Kind.QUEUE: f"/api/queues/{segment(name)}/messages",
            Kind.EXCHANGE: f"/api/exchanges/{segment(name)}/messages",
        }
        params = {} if resolved is Kind.TOPIC else {"vhost": vhost}
        for number, raw in enumerate(sys.stdin, start=1):
            line = raw.rstrip("\n")
            if not (line.strip() if as_json else line):
                continue
            result = client.post(
                paths[resolved], _message(line, as_json, defaults, number), **params
            )
            produced += 1
            if result.get("routed") is False:
                unroutable += 1
            if as_json:
                sys.stdout.write(json.dumps(result) + "\n")
    if unroutable:
        # An exchange with no matching binding drops the message: never report that as success.
        print(
            f"wharf: error: {unroutable} of {counted(produced, 'message')} were unroutable: "
            f"exchange {name} has no binding that matches (nothing was stored)",
            file=sys.stderr,
        )
        raise typer.Exit(1)
    print(f"produced {counted(produced, 'message')} to {resolved} {name}", file=sys.stderr)
