"""`wharf status`, `wharf topic ...` and `wharf group ...` against a running broker, in table
and --json forms."""

from __future__ import annotations

import json
from collections.abc import Callable

from click.testing import Result

RunCli = Callable[..., Result]


def test_status(wharf: RunCli) -> None:
    human = wharf("status")
    assert human.exit_code == 0, human.output
    assert "uptime" in human.output
    assert "Listeners" in human.output
    data = json.loads(wharf("status", "--json").stdout)
    assert {listener["name"] for listener in data["listeners"]} >= {"http"}
    assert data["totals"]["topics"] >= 0


def test_topic_lifecycle(wharf: RunCli, unique: str) -> None:
    created = wharf(
        "topic", "create", unique, "--partitions", "3", "--config", "retention.ms=60000"
    )
    assert created.exit_code == 0, created.output
    assert f"created topic {unique} (3 partitions)" in created.stdout

    listed = json.loads(wharf("topic", "list", "--json").stdout)
    assert {"name": unique, "partition_count": 3}.items() <= next(
        t for t in listed if t["name"] == unique
    ).items()
    assert unique in wharf("topic", "list").stdout

    described = json.loads(wharf("topic", "describe", unique, "--json").stdout)
    assert [p["partition"] for p in described["partitions"]] == [0, 1, 2]
    assert described["configs"]["retention.ms"] == "60000"
    table = wharf("topic", "describe", unique).stdout
    assert "Partitions" in table and "retention.ms" in table

    altered = wharf("topic", "alter", unique, "--config", "retention.ms=120000")
    assert altered.exit_code == 0, altered.output
    assert (
        json.loads(wharf("topic", "describe", unique, "--json").stdout)["configs"]["retention.ms"]
        == "120000"
    )
    reset = wharf("topic", "alter", unique, "--reset", "retention.ms", "--json")
    assert json.loads(reset.stdout)["configs"]["retention.ms"] == "604800000"
    nothing = wharf("topic", "alter", unique)
    assert nothing.exit_code == 1
    assert "nothing to change" in nothing.stderr

    deleted = wharf("topic", "delete", unique)
    assert deleted.exit_code == 0
    missing = wharf("topic", "describe", unique)
    assert missing.exit_code == 1
    assert missing.stderr.startswith("error: ")
    assert unique in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_topic_create_rejects_bad_arguments(wharf: RunCli, unique: str) -> None:
    bad_config = wharf("topic", "create", unique, "--config", "retention.ms")
    assert bad_config.exit_code == 1
    assert "KEY=VALUE" in bad_config.stderr
    bad_value = wharf("topic", "create", unique, "--config", "retention.ms=soon")
    assert bad_value.exit_code == 1
    assert "retention.ms" in bad_value.stderr
    assert wharf("topic", "create", unique, "--partitions", "0").exit_code == 2  # click usage


def test_group_reset_describe_list_delete(wharf: RunCli, unique: str) -> None:
    topic, group = f"{unique}-t", f"{unique}-g"
    assert wharf("topic", "create", topic, "--partitions", "2").exit_code == 0
    produced = wharf("produce", topic, "--partition", "0", input="a\nb\nc\nd\n")
    assert produced.exit_code == 0, produced.output

    dry = wharf("group", "reset-offsets", group, "--topic", topic, "--to-latest")
    assert dry.exit_code == 0, dry.output
    assert "dry run" in dry.stdout
    assert wharf("group", "describe", group).exit_code == 1  # nothing was committed

    done = wharf(
        "group", "reset-offsets", group, "--topic", topic, "--to-offset", "1", "--execute", "--json"
    )
    assert json.loads(done.stdout)["executed"] is True
    detail = json.loads(wharf("group", "describe", group, "--json").stdout)
    assert [(o["partition"], o["committed"], o["lag"]) for o in detail["offsets"]] == [
        (0, 1, 3),
        (1, 0, 0),
    ]
    assert "Offsets" in wharf("group", "describe", group).stdout
    listed = json.loads(wharf("group", "list", "--json").stdout)
    assert next(g for g in listed if g["group"] == group)["lag"] == 3
    assert group in wharf("group", "list").stdout

    earliest = wharf(
        "group",
        "reset-offsets",
        group,
        "--to-earliest",
        "--partition",
        "0",
        "--topic",
        topic,
        "--execute",
        "--json",
    )
    assert json.loads(earliest.stdout)["changes"] == [
        {"topic": topic, "partition": 0, "current": 1, "new": 0}
    ]
    by_time = wharf(
        "group",
        "reset-offsets",
        group,
        "--topic",
        topic,
        "--to-timestamp",
        "2000-01-01T00:00:00+00:00",
        "--json",
    )
    assert [c["new"] for c in json.loads(by_time.stdout)["changes"]] == [0, 0]

    two = wharf("group", "reset-offsets", group, "--to-earliest", "--to-latest")
    assert two.exit_code == 1
    assert "exactly one" in two.stderr
    bad_time = wharf("group", "reset-offsets", group, "--to-timestamp", "yesterday")
    assert bad_time.exit_code == 1

    assert wharf("group", "delete", group).exit_code == 0
    gone = wharf("group", "delete", group)
    assert gone.exit_code == 1
    assert "not found" in gone.stderr
