"""`wharf queue ...`, `wharf exchange ...` and `wharf binding ...` against a running broker."""

from __future__ import annotations

import json
from collections.abc import Callable

from click.testing import Result

RunCli = Callable[..., Result]


def test_queue_lifecycle(wharf: RunCli, unique: str) -> None:
    declared = wharf(
        "queue",
        "declare",
        unique,
        "--priority-max",
        "5",
        "--message-ttl",
        "60000",
        "--argument",
        "x-max-length=100",
        "--json",
    )
    assert declared.exit_code == 0, declared.output
    assert json.loads(declared.stdout)["arguments"] == {
        "x-max-priority": 5,
        "x-message-ttl": 60000,
        "x-max-length": 100,
    }
    conflict = wharf("queue", "declare", unique, "--priority-max", "7")
    assert conflict.exit_code == 1
    assert conflict.stderr.startswith("error: ")

    assert wharf("produce", unique, input="one\ntwo\nthree\n").exit_code == 0
    listed = json.loads(wharf("queue", "list", "--json").stdout)
    assert next(q for q in listed if q["name"] == unique)["messages"] == 3
    assert unique in wharf("queue", "list").stdout
    described = json.loads(wharf("queue", "describe", unique, "--json").stdout)
    assert described["published"] == 3
    assert "published" in wharf("queue", "describe", unique).stdout

    refused = wharf("queue", "delete", unique, "--if-empty")
    assert refused.exit_code == 1
    purged = wharf("queue", "purge", unique)
    assert purged.exit_code == 0
    assert "purged 3 messages" in purged.stdout
    assert wharf("queue", "delete", unique, "--if-empty").exit_code == 0
    missing = wharf("queue", "describe", unique)
    assert missing.exit_code == 1
    assert unique in missing.stderr


def test_exchange_and_binding_commands(wharf: RunCli, unique: str) -> None:
    exchange, queue = f"{unique}-x", f"{unique}-q"
    created = wharf("exchange", "declare", exchange, "--type", "fanout", "--json")
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["type"] == "fanout"
    listed = json.loads(wharf("exchange", "list", "--json").stdout)
    assert any(x["name"] == exchange and x["type"] == "fanout" for x in listed)
    assert exchange in wharf("exchange", "list").stdout
    assert wharf("queue", "declare", queue).exit_code == 0

    bound = wharf("binding", "create", exchange, queue, "--routing-key", "ignored")
    assert bound.exit_code == 0, bound.output
    bindings = json.loads(wharf("binding", "list", "--json").stdout)
    assert {"source": exchange, "destination": queue, "routing_key": "ignored"}.items() <= next(
        b for b in bindings if b["source"] == exchange
    ).items()
    assert queue in wharf("binding", "list").stdout
    described = wharf("queue", "describe", queue)
    assert described.exit_code == 0, described.output
    bindings_table = described.stdout.split("Bindings", 1)[1].split("Consumers", 1)[0]
    assert exchange in bindings_table and "ignored" in bindings_table

    sent = wharf("produce", exchange, "--routing-key", "any", input="fanned\n")
    assert sent.exit_code == 0, sent.output
    consumed = wharf("consume", queue, "--count", "1")
    assert consumed.stdout == "fanned\n"

    assert wharf("binding", "delete", exchange, queue, "--routing-key", "ignored").exit_code == 0
    assert not [
        b for b in json.loads(wharf("binding", "list", "--json").stdout) if b["source"] == exchange
    ]
    assert wharf("exchange", "delete", exchange).exit_code == 0
    unknown = wharf("exchange", "delete", exchange)
    assert unknown.exit_code == 1
    assert exchange in unknown.stderr
    bad_type = wharf("exchange", "declare", f"{unique}-y", "--type", "nonsense")
    assert bad_type.exit_code == 1


def test_counts_agree_with_their_nouns(wharf: RunCli, unique: str) -> None:
    created = wharf("topic", "create", unique, "--partitions", "1")
    assert f"created topic {unique} (1 partition)" in created.stdout
    queue = f"{unique}-q"
    assert wharf("queue", "declare", queue).exit_code == 0
    assert wharf("produce", queue, input="one\n").exit_code == 0
    assert f"purged 1 message from queue {queue}" in wharf("queue", "purge", queue).stdout
