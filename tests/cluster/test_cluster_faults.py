"""Fault tests of a three-node cluster, with real nodes, a real idempotent Kafka producer and a
checker (helpers/cluster_checker.py): a node killed with SIGKILL while producers write with
acks=all, a node paused past its lease and resumed, PostgreSQL restarted under load. After each
fault the checker reads every partition through two different nodes and requires that no
acknowledged record was lost, offsets are dense, both readers agree and the idempotent
producer's retries left no duplicate. The counts are printed (``-s`` shows them)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from helpers.cluster_checker import Ack, check, read_partitions
from helpers.cluster_nodes import ClusterNodes
from helpers.postgres_server import PostgresServer

PARTITIONS = 6
RATE = 500  # messages per second, spread over the partitions by key


def create_topic(bootstrap: str, name: str) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(name, PARTITIONS, replication_factor=1)])
    futures[name].result(timeout=30)


class Load:
    """An idempotent acks=all producer writing unique values at RATE in a thread."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "message.timeout.ms": 60_000,
                "topic.metadata.refresh.interval.ms": 1000,
                "reconnect.backoff.max.ms": 500,
            }
        )
        self.acks: list[Ack] = []
        self.errors: list[str] = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load", daemon=True)

    def _delivered(self, error: KafkaError | None, message: Message) -> None:
        if error is not None:
            self.errors.append(str(error))
            return
        offset = message.offset()
        assert offset is not None
        self.acks.append(Ack(message.partition() or 0, offset, message.value() or b""))

    def _run(self) -> None:
        interval = 1.0 / RATE
        next_send = time.monotonic()
        while not self._stop.is_set():
            value = f"v{self.sent:08d}".encode()
            self.producer.produce(
                self.topic, value, key=value, on_delivery=self._delivered
            )
            self.sent += 1
            self.producer.poll(0)
            next_send += interval
            delay = next_send - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
        remaining = self.producer.flush(90)
        assert remaining == 0, f"{remaining} messages still unanswered after 90 s"


def run_fault(nodes: ClusterNodes, topic: str, fault: Callable[[], None]) -> None:
    create_topic(nodes.bootstrap(), topic)
    load = Load(nodes.bootstrap(), topic)
    load.start()
    time.sleep(2.0)
    fault()
    time.sleep(4.0)
    load.stop()
    assert load.acks, f"nothing was acknowledged; errors {load.errors[:5]}"
    live = [i for i, n in enumerate(nodes.nodes) if n.running]
    first = read_partitions(nodes.nodes[live[0]].kafka_bootstrap, topic, PARTITIONS)
    second = read_partitions(nodes.nodes[live[-1]].kafka_bootstrap, topic, PARTITIONS)
    report = check(load.acks, first, second)
    print(f"{topic}: sent {load.sent}, delivery errors {len(load.errors)}; {report}")
    assert report.ok, str(report)
    assert len(load.acks) + len(load.errors) == load.sent


def test_kill_9_of_a_node_under_acks_all_produce(cluster_nodes: ClusterNodes) -> None:
    cluster_nodes.start(3)
    run_fault(cluster_nodes, "killed", cluster_nodes.nodes[0].kill)


def test_a_node_paused_past_its_lease_commits_nothing_stale(cluster_nodes: ClusterNodes) -> None:
    cluster_nodes.start(3)

    def pause_past_lease() -> None:
        cluster_nodes.pause(0)
        time.sleep(8.0)  # the lease is 5 s
        cluster_nodes.resume(0)

    run_fault(cluster_nodes, "paused", pause_past_lease)


def test_a_postgresql_restart_under_load(
    cluster_nodes: ClusterNodes, postgres: PostgresServer
) -> None:
    cluster_nodes.start(3)
    run_fault(cluster_nodes, "pg-restart", postgres.restart)
