"""Fault tests of a three-node cluster, with real nodes, a real idempotent Kafka producer and a
checker (wharf.testing.cluster_checker): a node killed with SIGKILL while producers write with
acks=all, a node paused past its lease and resumed, PostgreSQL restarted under load, the object
store black-holed for 10 s, one node cut off from the database past its lease. After each fault
the checker reads every partition through two different nodes and requires that no
acknowledged record was lost, offsets are dense, both readers agree and the idempotent
producer's retries left no duplicate. The counts are printed (``-s`` shows them).

The black holes are a TCP proxy (helpers/tcp_proxy.py) between the nodes and the engine: while
it holds, connections stay open and nothing gets through either way, as when a network drops
every packet."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from helpers.cluster_nodes import ClusterNodes
from helpers.postgres_server import PostgresServer
from helpers.s3_server import S3Server
from helpers.tcp_proxy import TcpProxy
from wharf.testing.cluster_checker import Ack, check, read_partitions

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


def run_fault(nodes: ClusterNodes, topic: str, fault: Callable[[], None]) -> Load:
    """Load, then ``fault()`` (returning when the cluster is meant to be whole again), more
    load, then the check; the load, for tests that look further."""
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
    return load


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


@pytest.fixture
def store_proxy(s3_server: S3Server) -> Iterator[TcpProxy]:
    """A proxy in front of the S3 server (requested before ``cluster_nodes``, so the nodes are
    stopped while it still forwards)."""
    endpoint = urlsplit(s3_server.endpoint)
    assert endpoint.hostname is not None and endpoint.port is not None
    with TcpProxy(endpoint.hostname, endpoint.port) as proxy:
        yield proxy


@pytest.fixture
def database_proxy(postgres: PostgresServer) -> Iterator[TcpProxy]:
    """A proxy in front of PostgreSQL (requested before ``cluster_nodes``, as ``store_proxy``)."""
    with TcpProxy(postgres.host, postgres.port) as proxy:
        yield proxy


def test_the_object_store_black_holed_for_10_s_under_load(
    store_proxy: TcpProxy, cluster_nodes: ClusterNodes
) -> None:
    """Every node reaches the store through the proxy. While it holds, uploads hang: produce
    must wait or fail retriably, never acknowledge; once it forwards again, the producer's
    retries are acknowledged and no message ends in an error."""
    cluster_nodes.env["AWS_ENDPOINT_URL"] = f"http://{store_proxy.address}"
    cluster_nodes.start(3)

    def store_down() -> None:
        store_proxy.black_hole()
        time.sleep(10.0)
        store_proxy.restore()

    load = run_fault(cluster_nodes, "store-down", store_down)
    assert load.errors == []


def api_cluster_nodes(bootstrap_node: Any) -> dict[str, dict[str, Any]]:
    """``/api/cluster``'s nodes as one node sees them, by node id."""
    response = httpx.get(f"{bootstrap_node.http_url}/api/cluster", timeout=10)
    response.raise_for_status()
    return {n["node_id"]: n for n in response.json()["nodes"]}


def wait_for(what: str, condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s:g} s: {what}")
        time.sleep(0.2)


def test_a_node_cut_off_from_the_database_past_its_lease_rejoins_with_a_new_epoch(
    database_proxy: TcpProxy, cluster_nodes: ClusterNodes, postgres: PostgresServer
) -> None:
    """Node 0 reaches PostgreSQL through the proxy, the others directly; its clients reach it
    as before. The issue suggests network namespaces with nftables for the cut: a black-holing
    proxy in front of the one node's database traffic is the same fault for that node (open
    connections hang, nothing gets through) and needs no privileges. The cut lasts until the
    other nodes see node 0's lease expired, and 3 s more: node 0 must stop acknowledging (its
    commits are fenced by the lease in their transactions, and its own view of the lease ends),
    the producer moves to the others, and once reconnected node 0 registers again with a new
    epoch. The checker then finds nothing lost and nothing stale committed (dense offsets, no
    duplicates)."""
    direct = cluster_nodes.database_url
    cluster_nodes.database_url = direct.replace(
        f"@{postgres.host}:{postgres.port}/", f"@{database_proxy.address}/"
    )
    assert cluster_nodes.database_url != direct
    cluster_nodes.start(1)
    cluster_nodes.database_url = direct
    cluster_nodes.start(2)
    cut, witness = cluster_nodes.nodes[0], cluster_nodes.nodes[1]
    cut_id = next(i for i, n in api_cluster_nodes(cut).items() if n["this_node"])
    wait_for("every node sees node 0", lambda: cut_id in api_cluster_nodes(witness))
    first_epoch = api_cluster_nodes(witness)[cut_id]["epoch"]

    def cut_off() -> None:
        database_proxy.black_hole()
        wait_for(
            "the others see node 0's lease expired",
            lambda: not api_cluster_nodes(witness)[cut_id]["live"],
        )
        time.sleep(3.0)
        database_proxy.restore()
        wait_for(
            "node 0 registered again",
            lambda: (n := api_cluster_nodes(witness)[cut_id])["live"]
            and n["epoch"] > first_epoch,
        )

    run_fault(cluster_nodes, "db-cut-off", cut_off)
    log = cut.log_text()
    assert "registering again" in log, log[-4000:]
