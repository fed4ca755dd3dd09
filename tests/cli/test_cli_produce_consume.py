"""`wharf produce` and `wharf consume` with topics and queues: plain lines, JSON lines, offsets,
groups, --count and --follow."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable

import httpx
from click.testing import Result

from helpers.broker_process import WharfProcess, clean_env, wharf_command

RunCli = Callable[..., Result]


def test_topic_round_trip_plain_and_json(wharf: RunCli, unique: str) -> None:
    assert wharf("topic", "create", unique, "--partitions", "2").exit_code == 0
    plain = wharf("produce", unique, "--partition", "0", input="a\nb\n\nc\n")
    assert plain.exit_code == 0, plain.output
    assert "produced 3 messages" in plain.stderr
    lines = [
        {"value": "k1", "key": "user-1", "headers": {"trace": "t1"}, "partition": 1},
        {"value": "AP8=", "encoding": "base64", "partition": 1},
    ]
    as_json = wharf("produce", unique, "--json", input="".join(json.dumps(x) + "\n" for x in lines))
    assert as_json.exit_code == 0, as_json.output
    results = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [(r["partition"], r["offset"]) for r in results] == [(1, 0), (1, 1)]

    everything = wharf("consume", unique, "--from-beginning", "--partition", "0")
    assert everything.stdout == "a\nb\nc\n"
    from_offset = wharf("consume", unique, "--partition", "0", "--offset", "1", "--count", "1")
    assert from_offset.stdout == "b\n"
    records = [
        json.loads(line)
        for line in wharf(
            "consume", unique, "--partition", "1", "--offset", "0", "--json"
        ).stdout.splitlines()
    ]
    assert records[0]["key"] == "user-1"
    assert records[0]["headers"] == {"trace": "t1"}
    assert records[0]["offset"] == 0 and records[0]["partition"] == 1
    assert records[1]["encoding"] == "base64" and records[1]["value"] == "AP8="
    latest = wharf("consume", unique)  # default start is the end: nothing new
    assert latest.exit_code == 0 and latest.stdout == ""

    bad = wharf("produce", unique, "--json", input='{"value": "x", "colour": "red"}\n')
    assert bad.exit_code == 1
    assert "unknown fields colour" in bad.stderr


def test_consume_with_a_group_commits_progress(wharf: RunCli, unique: str) -> None:
    topic, group = f"{unique}-t", f"{unique}-g"
    assert wharf("topic", "create", topic).exit_code == 0
    assert wharf("produce", topic, input="1\n2\n3\n4\n5\n").exit_code == 0
    first = wharf("consume", topic, "--group", group, "--from-beginning", "--count", "2")
    assert first.stdout == "1\n2\n"
    detail = json.loads(wharf("group", "describe", group, "--json").stdout)
    assert [(o["committed"], o["lag"]) for o in detail["offsets"]] == [(2, 3)]
    rest = wharf("consume", topic, "--group", group)
    assert rest.stdout == "3\n4\n5\n"
    detail = json.loads(wharf("group", "describe", group, "--json").stdout)
    assert [(o["committed"], o["lag"]) for o in detail["offsets"]] == [(5, 0)]


def test_queue_consume_removes_messages(wharf: RunCli, unique: str) -> None:
    assert wharf("queue", "declare", unique).exit_code == 0
    assert wharf("produce", unique, "--kind", "queue", input="x\ny\nz\n").exit_code == 0
    got = wharf("consume", unique, "--count", "2", "--json")
    messages = [json.loads(line) for line in got.stdout.splitlines()]
    assert [m["value"] for m in messages] == ["x", "y"]
    assert messages[0]["routing_key"] == unique
    assert wharf("consume", unique).stdout == "z\n"
    assert wharf("consume", unique).stdout == ""
    wrong = wharf("consume", unique, "--group", "g")
    assert wrong.exit_code == 1
    assert "topics only" in wrong.stderr
    missing = wharf("consume", f"{unique}-absent")
    assert missing.exit_code == 1
    assert "no topic or queue named" in missing.stderr


def test_consume_follow_prints_new_messages(cli_server: WharfProcess, unique: str) -> None:
    """--follow as a shell runs it: a subprocess that keeps printing as messages arrive."""
    with httpx.Client(base_url=cli_server.http_url) as api:
        assert api.post("/api/topics", json={"name": unique}).status_code == 201
        follower = subprocess.Popen(
            wharf_command(
                "consume", unique, "--follow", "--count", "3", "--url", cli_server.http_url
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=clean_env(),
            text=True,
        )
        try:
            # the consumer starts at the end, so publish until it has seen three messages
            deadline = time.monotonic() + 60
            sent = 0
            while follower.poll() is None:
                assert time.monotonic() < deadline, "consume --follow never finished"
                api.post(f"/api/topics/{unique}/messages", json={"value": f"live{sent}"})
                sent += 1
                time.sleep(0.3)
            out, err = follower.communicate(timeout=30)
        finally:
            if follower.poll() is None:
                follower.kill()
                follower.communicate()
    assert follower.returncode == 0, err
    values = out.splitlines()
    assert len(values) == 3
    first = int(values[0].removeprefix("live"))
    assert values == [f"live{first}", f"live{first + 1}", f"live{first + 2}"]


def test_errors_are_one_line_with_nonzero_exit(unique: str) -> None:
    """Against a port where nothing listens: the real executable, as a shell sees it."""
    result = subprocess.run(
        [*wharf_command("topic", "list", "--url", "http://127.0.0.1:9")],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: cannot reach the broker at http://127.0.0.1:9")


def test_follow_with_a_group_commits_while_running(cli_server: WharfProcess, unique: str) -> None:
    topic, group = f"{unique}-t", f"{unique}-g"
    with httpx.Client(base_url=cli_server.http_url) as api:
        assert api.post("/api/topics", json={"name": topic}).status_code == 201
        for i in range(2):
            api.post(f"/api/topics/{topic}/messages", json={"value": f"m{i}"})
        follower = subprocess.Popen(
            wharf_command(
                "consume",
                topic,
                "--group",
                group,
                "--from-beginning",
                "--follow",
                "--url",
                cli_server.http_url,
            ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=clean_env(),
            text=True,
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                detail = api.get(f"/api/groups/{group}")
                if detail.status_code == 200 and detail.json()["offsets"]:
                    if detail.json()["offsets"][0]["committed"] == 2:
                        break
                assert follower.poll() is None, follower.communicate()[1]
                assert time.monotonic() < deadline, "the follower never committed"
                time.sleep(0.1)
        finally:
            follower.terminate()
            follower.communicate(timeout=30)


def test_unroutable_messages_are_reported_with_a_nonzero_exit(wharf: RunCli, unique: str) -> None:
    # Publishing to an exchange with nothing bound loses the message: the CLI must say so.
    result = wharf("produce", "amq.topic", "-r", f"{unique}.nobody", input="e\nf\n")
    assert result.exit_code == 1, result.output
    assert "2 of 2 messages were unroutable" in result.stderr
    assert "produced" not in result.stderr
    assert wharf("queue", "declare", unique).exit_code == 0
    assert wharf("binding", "create", "amq.topic", unique, "-k", f"{unique}.#").exit_code == 0
    routed = wharf("produce", "amq.topic", "-r", f"{unique}.x", input="g\n")
    assert routed.exit_code == 0, routed.output
    assert "produced 1 message to exchange" in routed.stderr


def test_produce_help_says_json_reads_json_lines(wharf: RunCli) -> None:
    text = " ".join(wharf("produce", "--help").stdout.split())
    assert "Read stdin as JSON lines" in text
