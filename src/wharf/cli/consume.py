"""`wharf consume NAME`: print messages from a topic or a queue, one a line.

Topics are read through the peek endpoint partition by partition: from ``--offset``, from a
group's committed offsets (``--group``, committing progress back), from the beginning, or
(default) from the end. Queues are drained with ``get`` and ``ack``: consumed messages leave
the queue. With ``--group``, progress is committed when the command ends, and after each batch
while following. ``--follow`` keeps waiting for new messages; ``--count`` stops after that many.
"""

from __future__ import annotations

import base64
import json
import sys
import time
from typing import Annotated, Any

import typer

from wharf.cli.client import (
    DEFAULT_URL,
    CliError,
    JsonOption,
    UrlOption,
    VhostOption,
    WharfClient,
    reporting_errors,
    segment,
)
from wharf.cli.produce import KindOption
from wharf.cli.target import Kind, resolve

POLL_WAIT_MS = 1000
QUEUE_POLL_S = 0.5
BATCH = 100


def _write(message: dict[str, Any], as_json: bool) -> None:
    if as_json:
        sys.stdout.write(json.dumps(message) + "\n")
    elif message["encoding"] == "base64":
        sys.stdout.flush()
        sys.stdout.buffer.write(base64.b64decode(message["value"]) + b"\n")
    else:
        sys.stdout.write(message["value"] + "\n")
    sys.stdout.flush()


class _TopicReader:
    """Positions per partition and the calls that move them forward."""

    def __init__(self, client: WharfClient, topic: str, partitions: list[int]) -> None:
        self.client = client
        self.topic = topic
        self.partitions = partitions
        self.positions: dict[int, int] = {}
        self.committed: dict[int, int] = {}

    def start(
        self, detail: dict[str, Any], offset: int | None, group: str | None, from_beginning: bool
    ) -> None:
        """Set each partition's position; ``detail`` is the topic as GET /api/topics/NAME
        returns it."""
        bounds = {p["partition"]: p for p in detail["partitions"]}
        missing = [p for p in self.partitions if p not in bounds]
        if missing:
            raise CliError(f"topic {self.topic!r} has no partition {missing[0]}")
        if group is not None:
            self.committed = self._group_offsets(group)
        for p in self.partitions:
            if offset is not None:
                self.positions[p] = offset
            elif p in self.committed:
                self.positions[p] = self.committed[p]
            elif from_beginning:
                self.positions[p] = bounds[p]["log_start_offset"]
            else:
                self.positions[p] = bounds[p]["high_watermark"]

    def _group_offsets(self, group: str) -> dict[int, int]:
        if not self.client.probe(f"/api/groups/{segment(group)}", {}):
            return {}
        detail = self.client.get(f"/api/groups/{segment(group)}")
        return {
            o["partition"]: o["committed"] for o in detail["offsets"] if o["topic"] == self.topic
        }

    def poll(self, partition: int, limit: int, wait_ms: int) -> list[dict[str, Any]]:
        result = self.client.get(
            f"/api/topics/{segment(self.topic)}/partitions/{partition}/messages",
            offset=self.positions[partition],
            limit=limit,
            wait_ms=wait_ms,
        )
        messages: list[dict[str, Any]] = result["messages"]
        if result.get("next_offset") is not None:
            self.positions[partition] = result["next_offset"]
        return messages

    def commit(self, group: str) -> None:
        for p, position in self.positions.items():
            if self.committed.get(p) == position:
                continue
            self.client.post(
                f"/api/groups/{segment(group)}/reset-offsets",
                {
                    "to": "offset",
                    "topic": self.topic,
                    "partitions": [p],
                    "offset": position,
                    "execute": True,
                },
            )
            self.committed[p] = position


def _consume_topic(
    client: WharfClient,
    name: str,
    partition: int | None,
    offset: int | None,
    group: str | None,
    from_beginning: bool,
    count: int | None,
    follow: bool,
    as_json: bool,
) -> int:
    detail = client.get(f"/api/topics/{segment(name)}")
    partitions = [partition] if partition is not None else list(range(detail["partition_count"]))
    reader = _TopicReader(client, name, partitions)
    reader.start(detail, offset, group, from_beginning)
    printed = 0
    try:
        while count is None or printed < count:
            got = 0
            for p in partitions:
                remaining = BATCH if count is None else min(BATCH, count - printed)
                if remaining <= 0:
                    break
                wait = POLL_WAIT_MS if follow and len(partitions) == 1 else 0
                for message in reader.poll(p, remaining, wait):
                    _write(message, as_json)
                    printed += 1
                    got += 1
            if got == 0:
                if not follow:
                    break
                if len(partitions) > 1:
                    time.sleep(QUEUE_POLL_S)
            elif group is not None and follow:
                reader.commit(group)  # a long-running follower keeps its group current
    finally:
        if group is not None:
            reader.commit(group)
    return printed


def _consume_queue(
    client: WharfClient, name: str, vhost: str, count: int | None, follow: bool, as_json: bool
) -> int:
    printed = 0
    path = f"/api/queues/{segment(name)}/get"
    while count is None or printed < count:
        want = BATCH if count is None else min(BATCH, count - printed)
        result = client.post(path, {"count": want, "ack": True}, vhost=vhost)
        for message in result["messages"]:
            _write(message, as_json)
            printed += 1
        if not result["messages"]:
            if not follow:
                break
            time.sleep(QUEUE_POLL_S)
    return printed


def consume(
    name: str,
    kind: KindOption = Kind.AUTO,
    group: Annotated[
        str | None, typer.Option("--group", "-g", help="Start from and commit to this group.")
    ] = None,
    partition: Annotated[
        int | None,
        typer.Option("--partition", "-p", min=0, help="Only this partition (topics)."),
    ] = None,
    offset: Annotated[
        int | None,
        typer.Option("--offset", "-o", min=0, help="Start at this offset (topics)."),
    ] = None,
    from_beginning: Annotated[
        bool,
        typer.Option("--from-beginning", help="Start at the log start (default: the end)."),
    ] = False,
    count: Annotated[
        int | None,
        typer.Option("--count", "-n", min=1, help="Stop after this many messages."),
    ] = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep waiting for new messages.")
    ] = False,
    vhost: VhostOption = "/",
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Print messages from the topic or queue NAME (queue messages are removed)."""
    with reporting_errors(), WharfClient(url) as client:
        resolved = resolve(client, name, kind, vhost, {Kind.TOPIC, Kind.QUEUE})
        try:
            if resolved is Kind.TOPIC:
                _consume_topic(
                    client, name, partition, offset, group, from_beginning, count, follow, as_json
                )
            else:
                if group is not None or offset is not None or partition is not None:
                    raise CliError("--group, --offset and --partition apply to topics only")
                _consume_queue(client, name, vhost, count, follow, as_json)
        except KeyboardInterrupt:
            pass
