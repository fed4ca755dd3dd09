"""Faust (faust-streaming, over aiokafka) against Wharf's Kafka listener: an agent counts the
words of a two-partition topic into a table backed by a changelog topic, read back from the
changelog. (A worker killed mid-event is not in the suite: docs/testing.md says why.)

What Faust asks of the broker here: topic creation with configs (the changelog and its
``cleanup.policy=compact``, the leader-assignor topic), a consumer group joined with Faust's own
partition assignor (protocol ``faust``, its metadata and assignments in the members' user data),
committed offsets, ListOffsets and Fetch of the changelog from its beginning during recovery, and
the eviction of a member killed without leaving the group. Tables live in memory
(``store="memory://"``), so a new worker has nothing but the changelog to rebuild them from.
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
from worker_process import BOUND_S

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
}



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
