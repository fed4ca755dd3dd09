"""The real Kafka clients (kafka-python, aiokafka, confluent-kafka) across real
``wharf serve --cluster`` nodes (helpers/cluster_nodes.py): each client produces through one node
and consumes with a consumer group through another; a group with members bootstrapped on two
nodes splits the partitions and commits; a group's committed offsets outlive its coordinator
node, and a new member resumes from them; topic admin and ListOffsets answer the same on every
node.

"Through a node" is the client's bootstrap: Metadata then names every live node, and the client
sends each partition's requests to its leader, as Kafka clients do. ListOffsets is sent to each
node in turn explicitly (aiokafka's low-level client), so every node answers it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.client import AIOKafkaClient
from aiokafka.protocol.offset import OffsetRequest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import (
    AdminClient,
    ConfigResource,
    NewPartitions,
    NewTopic,
    ResourceType,
)
from kafka import KafkaConsumer, KafkaProducer

from helpers.cluster_nodes import ClusterNodes

PARTITIONS = 3
COUNT = 60
BOUND_S = 30.0


def wait_for(what: str, condition: Callable[[], bool], timeout_s: float = BOUND_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.2)


def start_seen(nodes: ClusterNodes, count: int) -> list[Any]:
    """Start ``count`` nodes and wait until each one's Metadata lists them all (a node's view
    of the live nodes is refreshed every heartbeat interval)."""
    started = nodes.start(count)

    def everyone_sees_all() -> bool:
        return all(
            len(AdminClient({"bootstrap.servers": n.kafka_bootstrap}).list_topics(
                timeout=BOUND_S
            ).brokers) == count
            for n in started
        )

    wait_for(f"every node lists {count} brokers", everyone_sees_all)
    return started


def create_topic(bootstrap: str, name: str, partitions: int = PARTITIONS) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(name, partitions, replication_factor=1)])[name].result(30)


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The group's committed offsets, asked through ``bootstrap`` (OffsetFetch, no join)."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        wanted = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(wanted, timeout=BOUND_S)}
    finally:
        consumer.close()


def values(prefix: str) -> list[bytes]:
    return [f"{prefix}-{i:04d}".encode() for i in range(COUNT)]


# --- each client: produce through one node, consume as a group through another ----------------


def kafka_python_round_trip(produce_to: str, consume_from: str, topic: str) -> list[bytes]:
    producer = KafkaProducer(bootstrap_servers=produce_to, acks="all")
    for value in values(topic):
        producer.send(topic, value, key=value)
    producer.flush(BOUND_S)
    producer.close()
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=consume_from,
        group_id=topic,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    got: list[bytes] = []
    deadline = time.monotonic() + BOUND_S
    while len(got) < COUNT and time.monotonic() < deadline:
        for records in consumer.poll(timeout_ms=500).values():
            got.extend(r.value for r in records)
    consumer.commit()
    consumer.close()
    return got


async def aiokafka_round_trip(produce_to: str, consume_from: str, topic: str) -> list[bytes]:
    producer = AIOKafkaProducer(bootstrap_servers=produce_to, acks="all")
    await producer.start()
    try:
        for value in values(topic):
            await producer.send(topic, value, key=value)
        await producer.flush()
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=consume_from,
        group_id=topic,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await consumer.start()
    got: list[bytes] = []
    try:
        async with asyncio.timeout(BOUND_S):
            while len(got) < COUNT:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    got.extend(r.value for r in records if r.value is not None)
        await consumer.commit()
    finally:
        await consumer.stop()
    return got


def confluent_round_trip(produce_to: str, consume_from: str, topic: str) -> list[bytes]:
    producer = Producer({"bootstrap.servers": produce_to, "acks": "all"})
    for value in values(topic):
        producer.produce(topic, value, key=value)
    assert producer.flush(BOUND_S) == 0
    consumer = Consumer(
        {
            "bootstrap.servers": consume_from,
            "group.id": topic,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + BOUND_S
    while len(got) < COUNT and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        if message is not None and message.error() is None:
            got.append(message.value() or b"")
    consumer.commit(asynchronous=False)
    consumer.close()
    return got


ROUND_TRIPS: dict[str, Callable[[str, str, str], list[bytes]]] = {
    "kafka-python": kafka_python_round_trip,
    "aiokafka": lambda p, c, t: asyncio.run(aiokafka_round_trip(p, c, t)),
    "confluent-kafka": confluent_round_trip,
}


@pytest.mark.parametrize("client", sorted(ROUND_TRIPS))
def test_each_client_produces_through_one_node_and_its_group_consumes_through_another(
    cluster_nodes: ClusterNodes, client: str
) -> None:
    first, second = (n.kafka_bootstrap for n in cluster_nodes.start(2))
    topic = client.replace("-", "_")
    create_topic(first, topic)
    got = ROUND_TRIPS[client](first, second, topic)
    assert sorted(got) == values(topic)
    ends = committed(first, topic, topic, PARTITIONS)
    assert sum(ends.values()) == COUNT, ends


# --- a group whose members are on two nodes ---------------------------------------------------


def test_a_group_with_members_on_two_nodes_splits_the_partitions_and_commits(
    cluster_nodes: ClusterNodes,
) -> None:
    nodes = start_seen(cluster_nodes, 3)
    topic = group = "split"
    create_topic(nodes[0].kafka_bootstrap, topic, 4)
    members = [
        Consumer(
            {
                "bootstrap.servers": node.kafka_bootstrap,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        for node in nodes[:2]
    ]
    got: list[list[bytes]] = [[], []]

    def poll_all() -> None:
        for index, member in enumerate(members):
            message = member.poll(0.2)
            if message is not None and message.error() is None:
                got[index].append(message.value() or b"")

    def split() -> bool:
        poll_all()
        owned = [{tp.partition for tp in m.assignment()} for m in members]
        return all(owned) and owned[0] | owned[1] == set(range(4)) and not owned[0] & owned[1]

    try:
        for member in members:
            member.subscribe([topic])
        wait_for("both members hold partitions", split)
        producer = Producer({"bootstrap.servers": nodes[2].kafka_bootstrap, "acks": "all"})
        for value in values(topic):
            producer.produce(topic, value, key=value)
        assert producer.flush(BOUND_S) == 0
        wait_for("every record consumed", lambda: poll_all() or len(got[0] + got[1]) >= COUNT)
        owned = [sorted(tp.partition for tp in m.assignment()) for m in members]
        for member in members:
            member.commit(asynchronous=False)
    finally:
        for member in members:
            member.close()
    assert sorted(got[0] + got[1]) == values(topic)
    assert got[0] and got[1], owned
    ends = committed(nodes[2].kafka_bootstrap, group, topic, 4)
    assert sum(ends.values()) == COUNT, ends


# --- the coordinator's node killed ------------------------------------------------------------


def node_of_broker(nodes: ClusterNodes, broker_id: int) -> int:
    admin = AdminClient({"bootstrap.servers": nodes.bootstrap()})
    port = admin.list_topics(timeout=BOUND_S).brokers[broker_id].port
    return next(i for i, n in enumerate(nodes.nodes) if n.kafka_port == port)


def test_committed_offsets_outlive_the_coordinator_node_and_a_new_member_resumes_from_them(
    cluster_nodes: ClusterNodes,
) -> None:
    """A member consumes, commits about half, reads an uncommitted tail and leaves; the node
    coordinating the group is killed; a new member on the survivors starts at the committed
    offsets: nothing is skipped, and only that tail is read again."""
    nodes = start_seen(cluster_nodes, 3)
    topic = group = "resume"
    create_topic(cluster_nodes.bootstrap(), topic, 4)
    producer = Producer({"bootstrap.servers": cluster_nodes.bootstrap(), "acks": "all"})
    for value in values(topic):
        producer.produce(topic, value, key=value)
    assert producer.flush(BOUND_S) == 0

    def member(bootstrap: str) -> Consumer:
        consumer = Consumer(
            {
                "bootstrap.servers": bootstrap,
                "group.id": group,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([topic])
        return consumer

    def consume(consumer: Consumer, into: list[tuple[int, int, bytes]], until: int) -> None:
        def more() -> bool:
            message = consumer.poll(0.2)
            if message is not None and message.error() is None:
                offset = message.offset()
                assert offset is not None
                into.append((message.partition() or 0, offset, message.value() or b""))
            return len(into) >= until

        wait_for(f"{until} records consumed", more)

    first: list[tuple[int, int, bytes]] = []
    consumer = member(cluster_nodes.bootstrap())
    try:
        consume(consumer, first, COUNT // 2)
        consumer.commit(asynchronous=False)
        kept = {tp.partition: tp.offset for tp in consumer.committed(
            [TopicPartition(topic, p) for p in range(4)], timeout=BOUND_S
        )}
        consume(consumer, first, COUNT // 2 + 10)  # the uncommitted tail
    finally:
        consumer.close()

    admin = AdminClient({"bootstrap.servers": cluster_nodes.bootstrap()})
    described = admin.describe_consumer_groups([group])[group].result(BOUND_S)
    victim = node_of_broker(cluster_nodes, described.coordinator.id)
    nodes[victim].kill()
    survivors = cluster_nodes.bootstrap()

    assert committed(survivors, group, topic, 4) == kept
    second: list[tuple[int, int, bytes]] = []
    consumer = member(survivors)
    try:
        consume(consumer, second, sum(1 for _ in values(topic)) - sum(
            max(0, offset) for offset in kept.values()
        ))
    finally:
        consumer.close()
    starts = {p: min(o for q, o, _ in second if q == p) for p, _, _ in second}
    assert all(starts[p] == max(0, kept[p]) for p in starts), (starts, kept)
    committed_values = {v for p, o, v in first if o < kept[p]}
    assert committed_values | {v for _, _, v in second} == set(values(topic))
    again = {v for _, _, v in second} & {v for _, _, v in first}
    tail = {v for p, o, v in first if o >= kept[p]}
    assert again <= tail


# --- admin and ListOffsets through every node -------------------------------------------------


def test_topic_admin_through_different_nodes_agrees(cluster_nodes: ClusterNodes) -> None:
    admins = [
        AdminClient({"bootstrap.servers": n.kafka_bootstrap}) for n in start_seen(cluster_nodes, 3)
    ]
    topic = "admin"
    config = {"retention.ms": "3600000", "cleanup.policy": "compact"}
    admins[0].create_topics([NewTopic(topic, 2, replication_factor=1, config=config)])[
        topic
    ].result(BOUND_S)

    def described(admin: AdminClient) -> dict[str, str]:
        resource = ConfigResource(ResourceType.TOPIC, topic)
        entries = admin.describe_configs([resource])[resource].result(BOUND_S)
        return {name: entries[name].value for name in config}

    assert [described(a) for a in admins] == [config] * 3

    admins[1].create_partitions([NewPartitions(topic, 5)])[topic].result(BOUND_S)

    def partitions(admin: AdminClient) -> int:
        metadata = admin.list_topics(topic, timeout=BOUND_S).topics[topic]
        return -1 if metadata.error is not None else len(metadata.partitions)

    wait_for("every node sees 5 partitions", lambda: [partitions(a) for a in admins] == [5] * 3)

    admins[2].delete_topics([topic])[topic].result(BOUND_S)
    wait_for(
        "no node lists the topic",
        lambda: all(topic not in a.list_topics(timeout=BOUND_S).topics for a in admins),
    )


async def list_offsets_on_each_node(
    bootstrap: str, topic: str, partitions: int, timestamps: list[int]
) -> list[dict[tuple[int, int], int]]:
    """For each live broker: {(partition, timestamp): offset} as that broker answers
    ListOffsets for every partition and every timestamp (-2 earliest, -1 latest)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap)
    await client.bootstrap()
    answers = []
    try:
        for broker in sorted(client.cluster.brokers(), key=lambda b: b.nodeId):
            answer: dict[tuple[int, int], int] = {}
            for timestamp in timestamps:
                request = OffsetRequest(
                    replica_id=-1,
                    isolation_level=0,
                    topics=[(topic, [(p, timestamp) for p in range(partitions)])],
                )
                response: Any = await client.send(broker.nodeId, request)
                for _, parts in response.topics:
                    for partition, error, _, offset, *_ in parts:
                        assert error == 0, (broker.nodeId, partition, timestamp, error)
                        answer[(partition, timestamp)] = offset
            answers.append(answer)
    finally:
        await client.close()
    return answers


def test_list_offsets_agree_on_every_node(cluster_nodes: ClusterNodes) -> None:
    start_seen(cluster_nodes, 3)
    topic = "offsets"
    create_topic(cluster_nodes.bootstrap(), topic, 2)
    base = int(time.time() * 1000) - 1_000_000
    producer = Producer({"bootstrap.servers": cluster_nodes.nodes[0].kafka_bootstrap})
    for i in range(20):
        producer.produce(topic, b"x", partition=i % 2, timestamp=base + i * 1000)
        producer.flush(BOUND_S)  # one batch per record, so each timestamp is its own
    assert producer.flush(BOUND_S) == 0

    probes = [-2, -1, base, base + 5_000, base + 5_500, base + 100_000]
    answers = asyncio.run(
        list_offsets_on_each_node(cluster_nodes.bootstrap(), topic, 2, probes)
    )
    assert len(answers) == 3
    assert answers[1] == answers[0] and answers[2] == answers[0]
    expected = {
        (0, -2): 0, (1, -2): 0, (0, -1): 10, (1, -1): 10,
        (0, base): 0, (1, base): 0,
        (0, base + 5_000): 3, (1, base + 5_000): 2,  # the first at or after the time
        (0, base + 5_500): 3, (1, base + 5_500): 3,
        (0, base + 100_000): -1, (1, base + 100_000): -1,  # none that late
    }
    assert answers[0] == expected
