"""Deciding whether a name given to `produce`/`consume` is a topic, a queue or an exchange."""

from __future__ import annotations

from enum import StrEnum

from wharf.cli.client import CliError, WharfClient, segment


class Kind(StrEnum):
    AUTO = "auto"
    TOPIC = "topic"
    QUEUE = "queue"
    EXCHANGE = "exchange"


def resolve(client: WharfClient, name: str, kind: Kind, vhost: str, allowed: set[Kind]) -> Kind:
    """``kind`` itself unless AUTO; then the first of topic, queue, exchange that exists."""
    if kind is not Kind.AUTO:
        if kind not in allowed:
            raise CliError(f"cannot use a {kind} here")
        return kind
    probes = [
        (Kind.TOPIC, f"/api/topics/{segment(name)}", {}),
        (Kind.QUEUE, f"/api/queues/{segment(name)}", {"vhost": vhost}),
        (Kind.EXCHANGE, f"/api/exchanges/{segment(name)}", {"vhost": vhost}),
    ]
    for candidate, path, params in probes:
        if candidate in allowed and client.probe(path, params):
            return candidate
    names = " or ".join(candidate.value for candidate, _, _ in probes if candidate in allowed)
    raise CliError(f"no {names} named {name!r}")
