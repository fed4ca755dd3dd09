"""Faust (faust-streaming, over aiokafka) against Wharf's Kafka listener: an agent counts the
words of a two-partition topic into a table backed by a changelog topic, read back from the
changelog; and a worker killed with -9 mid-event leaves the event to the next worker.

What Faust asks of the broker here: topic creation with configs (the changelog and its
``cleanup.policy=compact``, the leader-assignor topic), a consumer group joined with Faust's own
partition assignor (protocol ``faust``, its metadata and assignments in the members' user data),
committed offsets, ListOffsets and Fetch of the changelog from its beginning, and the eviction of
a member killed without leaving the group. Tables live in memory (``store="memory://"``).

The killed worker's agent keeps no table: a worker that recovers a table loses, now and then,
the first records its agent would read after the recovery (Faust's issue #596; docs/testing.md
says what was seen), and the scenario tests the broker's part, not that.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from worker_process import BOUND_S, WorkerProcess

pytestmark = [pytest.mark.interop]

PARTITIONS = 2
# The default partitioner puts apple and pear in partition 1, fig and lime in partition 0.
WORDS = ["apple", "fig", "apple", "lime", "apple", "fig", "pear"]
COUNTS = {"apple": 3, "fig": 2, "lime": 1, "pear": 1}

# The settings a deployment would change for a test: tables in memory, no web server.
APP_SETTINGS: dict[str, Any] = {
    "store": "memory://",
    "topic_partitions": PARTITIONS,
    "web_enabled": False,
    # the shortest session Wharf allows (Faust's default is 60 s), so that a killed member is
    # evicted soon
    "broker_session_timeout": 6.0,
    "broker_heartbeat_interval": 1.0,
}

# The child's worker: each event it takes is appended to "seen" (pid and word). The word
# "stall" marks each start; the first one hangs (the worker is killed there), a later one
# writes "done".
WORKER = """
import asyncio, json, os, sys
from pathlib import Path
import faust
from faust.worker import Worker
bootstrap, state, app_id, settings = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
app = faust.App(app_id, broker=f"kafka://{bootstrap}", datadir=state, **json.loads(settings))
words = app.topic(f"{app_id}-words", key_type=str, value_type=str)

@app.agent(words)
async def take(stream):
    async for word in stream:
        with (state / "seen").open("a") as seen:
            seen.write(f"{os.getpid()} {word}\\n")
        if word == "stall":
            n = len(list(state.glob("started-*"))) + 1
            (state / f"started-{n}").write_text(word)
            if n == 1:
                await asyncio.sleep(3600)  # killed here
            (state / "done").write_text(word)

Worker(app, loglevel="info").execute_from_commandline()
"""


async def _create_topic(bootstrap: str, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        await admin.close()


async def _produce(bootstrap: str, topic: str, words: Iterable[str]) -> None:
    """Each word keyed by itself (so it always goes to the same partition), its value JSON."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for word in words:
            await producer.send_and_wait(topic, json.dumps(word).encode(), key=word.encode())
    finally:
        await producer.stop()


async def _read_changelog(bootstrap: str, topic: str) -> dict[str, int]:
    """The table as its changelog holds it: the last value of each key, read from offset 0."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        table: dict[str, int] = {}
        deadline = time.monotonic() + BOUND_S
        while True:
            positions = {tp: await consumer.position(tp) for tp in partitions}
            if all(positions[tp] >= ends[tp] for tp in partitions):
                break
            assert time.monotonic() < deadline, f"{topic} read to {positions}, not {ends}"
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                for record in records:
                    assert record.key is not None and record.value is not None
                    table[json.loads(record.key)] = json.loads(record.value)
        return table
    finally:
        await consumer.stop()


async def _cleanup_policy(bootstrap: str, topic: str) -> str:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        (response,) = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, topic)]
        )
    finally:
        await admin.close()
    ((_, _, _, _, configs),) = response.resources
    return str(dict((entry[0], entry[1]) for entry in configs)["cleanup.policy"])


async def test_an_agent_counts_words_into_a_table_and_its_changelog(
    wharf_broker: Any, tmp_path: Path
) -> None:
    bootstrap, app_id = wharf_broker.kafka_bootstrap, wharf_broker.group("counter")
    await _create_topic(bootstrap, f"{app_id}-words")
    # datadir: Faust's own directory, by default made in the working directory
    app = faust.App(app_id, broker=f"kafka://{bootstrap}", datadir=tmp_path, **APP_SETTINGS)
    words = app.topic(f"{app_id}-words", key_type=str, value_type=str)
    counts = app.Table("counts", default=int)
    seen: list[str] = []

    @app.agent(words)
    async def count(stream: faust.StreamT[str]) -> None:
        async for word in stream:
            counts[word] += 1
            seen.append(word)

    await app.start()
    try:
        await _produce(bootstrap, f"{app_id}-words", WORDS)
        deadline = time.monotonic() + BOUND_S
        while len(seen) < len(WORDS):
            assert time.monotonic() < deadline, f"the agent saw {seen} in {BOUND_S} s"
            await asyncio.sleep(0.05)
        assert sorted(seen) == sorted(WORDS)
        assert dict(counts.items()) == COUNTS
    finally:
        await app.stop()

    changelog = f"{app_id}-counts-changelog"
    assert await _read_changelog(bootstrap, changelog) == COUNTS
    assert await _cleanup_policy(bootstrap, changelog) == "compact"


async def _committed(bootstrap: str, group: str, topic: str) -> int:
    """The sum of the group's committed offsets on ``topic``."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic)


async def test_a_worker_killed_mid_event_leaves_it_to_the_next(
    wharf_broker: Any, tmp_path: Path
) -> None:
    bootstrap, app_id = wharf_broker.kafka_bootstrap, wharf_broker.group("taker")
    topic = f"{app_id}-words"
    await _create_topic(bootstrap, topic)
    await _produce(bootstrap, topic, WORDS)
    seen_file = tmp_path / "seen"

    def seen() -> list[tuple[str, str]]:
        """(pid, word) for each event a worker took, in the order taken."""
        text = seen_file.read_text() if seen_file.exists() else ""
        return [(pid, word) for pid, word in (line.split() for line in text.splitlines())]

    args = (app_id, json.dumps(APP_SETTINGS))
    first = WorkerProcess(WORKER, tmp_path, bootstrap, *args)
    first.start()
    try:
        await asyncio.to_thread(
            first.wait_until, "all words taken", lambda: len(seen()) == len(WORDS)
        )
        # Once these words' offsets are committed, the next worker does not take them again.
        deadline = time.monotonic() + BOUND_S
        while await _committed(bootstrap, app_id, topic) < len(WORDS):
            assert time.monotonic() < deadline, f"offsets not committed in {BOUND_S} s"
            await asyncio.sleep(0.2)
        await _produce(bootstrap, topic, ["stall"])
        await asyncio.to_thread(first.wait_for, "started-1")
        first.kill()
    finally:
        first.stop()

    second = WorkerProcess(WORKER, tmp_path, bootstrap, *args)
    second.start()
    try:
        await asyncio.to_thread(second.wait_for, "done")
        # the second worker commits the event it finished
        deadline = time.monotonic() + BOUND_S
        while await _committed(bootstrap, app_id, topic) < len(WORDS) + 1:
            assert time.monotonic() < deadline, f"the event not committed in {BOUND_S} s"
            await asyncio.sleep(0.2)
    finally:
        second.stop()

    taken = seen()
    # the first worker took every word, then the stalled event; the second took that event
    # again and nothing else
    assert sorted(word for _, word in taken[: len(WORDS)]) == sorted(WORDS)
    assert [word for _, word in taken[len(WORDS) :]] == ["stall", "stall"]
    assert len({pid for pid, _ in taken[:-1]}) == 1 and taken[-1][0] != taken[0][0]
    assert (tmp_path / "started-2").exists() and not (tmp_path / "started-3").exists()
