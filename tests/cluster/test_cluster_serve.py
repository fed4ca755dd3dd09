"""``wharf serve --cluster`` as real processes: two nodes on the session's PostgreSQL and
SeaweedFS register, see each other in ``/api/cluster``, Kafka Metadata, ``wharf cluster
status`` and the dashboard (a real headless Chromium), report the engines' latencies in
``/metrics``, and a node killed with SIGKILL leaves the others' Metadata once its lease is over.
Start-up refusals: an unreachable database (exit 1, its reason), no object store (exit 2).
Waits are bounded polls; no test asserts a duration."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.admin import AdminClient
from playwright.sync_api import sync_playwright

from helpers.broker_process import WharfProcess, run_wharf
from helpers.postgres_server import PostgresServer
from helpers.s3_server import S3Server

HEARTBEAT_MS = 200
LEASE_MS = 1500
MARGIN_S = LEASE_MS / 1000 + 20.0  # a lease, and room for a loaded machine

StartWharf = Callable[..., WharfProcess]
CHROMIUM = os.environ.get("WHARF_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]


@dataclass(frozen=True)
class Engines:
    database_url: str
    object_store: str
    env: dict[str, str]

    def flags(self) -> list[str]:
        return ["--cluster", self.database_url, "--object-store", self.object_store]


@pytest.fixture
def engines(database_url: str, s3_server: S3Server) -> Engines:
    return Engines(
        database_url,
        f"s3://wharf-serve-{uuid.uuid4().hex[:8]}/nodes",  # a bucket the nodes must create
        {
            "AWS_ENDPOINT_URL": s3_server.endpoint,
            "AWS_ACCESS_KEY_ID": s3_server.access_key,
            "AWS_SECRET_ACCESS_KEY": s3_server.secret_key,
            "AWS_REGION": s3_server.region,
            "WHARF_CLUSTER_HEARTBEAT_INTERVAL_MS": str(HEARTBEAT_MS),
            "WHARF_CLUSTER_LEASE_MS": str(LEASE_MS),
        },
    )


@pytest.fixture
def two_nodes(engines: Engines, start_wharf: StartWharf) -> Iterator[list[WharfProcess]]:
    """Two nodes, each once its view (refreshed every heartbeat interval) has the other."""
    nodes = [start_wharf(*engines.flags(), env=engines.env) for _ in range(2)]
    eventually(lambda: all(len(kafka_brokers(node)) == 2 for node in nodes))
    yield nodes


def api_cluster(node: WharfProcess) -> dict[str, object]:
    response = httpx.get(f"{node.http_url}/api/cluster", timeout=10)
    response.raise_for_status()
    body: dict[str, object] = response.json()
    return body


def kafka_brokers(node: WharfProcess) -> dict[int, tuple[str, int]]:
    admin = AdminClient({"bootstrap.servers": node.kafka_bootstrap})
    metadata = admin.list_topics(timeout=10)
    return {b.id: (b.host, b.port) for b in metadata.brokers.values()}


def eventually(check: Callable[[], bool], within: float = MARGIN_S) -> None:
    deadline = time.monotonic() + within
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.1)


def test_two_nodes_register_and_list_each_other(two_nodes: list[WharfProcess]) -> None:
    views = [api_cluster(node) for node in two_nodes]
    for node, view in zip(two_nodes, views, strict=True):
        assert view["mode"] == "cluster"
        nodes = view["nodes"]
        assert isinstance(nodes, list) and len(nodes) == 2
        assert [n["this_node"] for n in nodes].count(True) == 1
        me = next(n for n in nodes if n["this_node"])
        assert me["node_id"] == (node.data_dir / "node-id").read_text().strip()
        assert me["listeners"] == {name: port for name, (_host, port) in node.endpoints.items()}
        assert me["host"] == "127.0.0.1"
        assert all(n["live"] for n in nodes)
        assert {"broker_id", "started_at_ms", "last_heartbeat_ms", "lease_expires_at_ms"} <= set(me)
    assert views[0]["cluster_id"] == views[1]["cluster_id"]
    broker_ids = {n["node_id"]: n["broker_id"] for n in views[0]["nodes"]}  # type: ignore[union-attr]
    assert len(set(broker_ids.values())) == 2


def test_kafka_metadata_lists_both_brokers_on_either_node(
    two_nodes: list[WharfProcess],
) -> None:
    expected = {("127.0.0.1", node.kafka_port) for node in two_nodes}
    for node in two_nodes:
        brokers = kafka_brokers(node)
        assert set(brokers.values()) == expected
        assert len(brokers) == 2


def test_a_killed_node_leaves_the_others_metadata_then_its_lease_expires(
    two_nodes: list[WharfProcess],
) -> None:
    # Routing drops the node as soon as its database sessions close; the lease (the fence)
    # runs out later, and the row stays, dead.
    survivor, victim = two_nodes
    victim.kill()
    eventually(lambda: len(kafka_brokers(survivor)) == 1)
    assert list(kafka_brokers(survivor).values()) == [("127.0.0.1", survivor.kafka_port)]

    def others_live() -> list[object]:
        nodes = api_cluster(survivor)["nodes"]
        assert isinstance(nodes, list)
        return [n["live"] for n in nodes if not n["this_node"]]

    eventually(lambda: others_live() == [False])


def test_a_stopped_node_deregisters_at_once(two_nodes: list[WharfProcess]) -> None:
    survivor, leaving = two_nodes
    leaving.terminate()
    assert "left the cluster" in leaving.log_text()
    nodes = api_cluster(survivor)["nodes"]
    assert isinstance(nodes, list) and [n["this_node"] for n in nodes] == [True]


def test_a_restarted_node_keeps_its_broker_id(
    two_nodes: list[WharfProcess],
) -> None:
    first, second = two_nodes

    def broker_id_of(node: WharfProcess) -> object:
        view = api_cluster(node)["nodes"]
        assert isinstance(view, list)
        return next(n["broker_id"] for n in view if n["this_node"])

    before = broker_id_of(second)
    second.restart()
    assert broker_id_of(second) == before
    ports = {first.kafka_port, second.kafka_port}  # the restarted node's port is a new one
    eventually(lambda: {port for _host, port in kafka_brokers(first).values()} == ports)


def test_cluster_status_prints_both_nodes(two_nodes: list[WharfProcess], engines: Engines) -> None:
    result = run_wharf("cluster", "status", "--cluster", engines.database_url)
    assert result.returncode == 0, result.stderr
    for node in two_nodes:
        node_id = (node.data_dir / "node-id").read_text().strip()
        assert node_id in result.stdout
        assert f"kafka={node.kafka_port}" in result.stdout
    as_json = run_wharf("cluster", "status", "--cluster", engines.database_url, "--json")
    rows = json.loads(as_json.stdout)["nodes"]
    assert len(rows) == 2 and all(row["live"] for row in rows)


def test_cluster_status_on_an_unreachable_database_exits_1_with_the_reason(
    postgres: PostgresServer,
) -> None:
    url = postgres.url_for("wharf", password="wrong-password")
    result = run_wharf("cluster", "status", "--cluster", url)
    assert result.returncode == 1
    assert "password authentication failed" in result.stderr
    assert "wrong-password" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_database_url_stops_startup_with_one_line(
    postgres: PostgresServer, engines: Engines, tmp_path: pytest.TempPathFactory
) -> None:
    url = postgres.url_for("no_such_database")
    result = run_wharf(
        "serve", "--data-dir", str(tmp_path), "--kafka-port", "0", "--amqp-port", "0",
        "--http-port", "0", "--cluster", url, "--object-store", engines.object_store,
        env=engines.env,
    )  # fmt: skip
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert 'database "no_such_database" does not exist' in line
    assert "Traceback" not in result.stderr
    assert not re.search(r"wharf ready", result.stderr)


def test_an_unreachable_object_store_stops_startup_with_one_line(
    engines: Engines, tmp_path: pytest.TempPathFactory
) -> None:
    env = {**engines.env, "AWS_ACCESS_KEY_ID": "nobody", "AWS_SECRET_ACCESS_KEY": "wrong-secret"}
    result = run_wharf(
        "serve", "--data-dir", str(tmp_path), "--kafka-port", "0", "--amqp-port", "0",
        "--http-port", "0", *engines.flags(), env=env,
    )  # fmt: skip
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert "object store" in line and "wrong-secret" not in line
    assert "Traceback" not in result.stderr


def test_a_database_without_an_object_store_is_a_config_error(
    engines: Engines, tmp_path: pytest.TempPathFactory
) -> None:
    result = run_wharf(
        "serve", "--data-dir", str(tmp_path), "--cluster", engines.database_url, env=engines.env
    )
    assert result.returncode == 2
    assert "cluster.object_store" in result.stderr and "--object-store" in result.stderr


def test_metrics_report_database_and_object_store_latency(
    two_nodes: list[WharfProcess],
) -> None:
    text = httpx.get(f"{two_nodes[0].http_url}/metrics", timeout=10).text
    heartbeats = r'^wharf_database_seconds_count\{operation="nodes.heartbeat"\} [1-9]'
    assert re.search(heartbeats, text, re.M)
    assert re.search(r'^wharf_database_seconds_count\{operation="migrate"\} 1\.0$', text, re.M)
    assert re.search(r'^wharf_object_store_seconds_count\{operation="open"\} 1\.0$', text, re.M)


def test_metrics_report_flushes_and_the_read_cache(two_nodes: list[WharfProcess]) -> None:
    node = two_nodes[0]
    producer = Producer({"bootstrap.servers": node.kafka_bootstrap, "acks": "all"})
    for i in range(20):
        producer.produce("metered", f"m{i}".encode())
    assert producer.flush(30) == 0
    consumer = Consumer(
        {"bootstrap.servers": node.kafka_bootstrap, "group.id": "metered",
         "auto.offset.reset": "earliest"}
    )
    consumer.subscribe(["metered"])
    got = 0
    deadline = time.monotonic() + 30
    while got < 20 and time.monotonic() < deadline:
        message = consumer.poll(0.5)
        got += message is not None and message.error() is None
    consumer.close()
    assert got == 20

    def counter(name: str) -> float:
        text = httpx.get(f"{node.http_url}/metrics", timeout=10).text
        found = re.search(rf"^{name} (\S+)$", text, re.M)
        assert found, name
        return float(found.group(1))

    flushes = counter("wharf_cluster_flushes_total")
    assert flushes >= 1
    # each flush's object holds at least one record batch (a 61-byte header and more)
    assert counter("wharf_cluster_flushed_bytes_total") > 61 * flushes
    # the node reads back what it flushed: its own objects are in its cache
    assert counter("wharf_cluster_read_cache_hits_total") >= 1
    counter("wharf_cluster_read_cache_misses_total")  # exported, whatever its value


@pytest.mark.slow
def test_the_overview_shows_the_cluster_nodes(two_nodes: list[WharfProcess]) -> None:
    node_ids = [(n.data_dir / "node-id").read_text().strip() for n in two_nodes]
    problems: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page()
            tab.set_default_timeout(60_000)
            tab.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            tab.goto(two_nodes[0].http_url + "/")
            tab.wait_for_selector("#cluster table tbody tr:nth-child(2)")
            text = tab.locator("#cluster").inner_text()
        finally:
            browser.close()
    assert problems == []
    assert f"{node_ids[0]} (this node)" in text
    assert node_ids[1] in text and f"{node_ids[1]} (this node)" not in text
    assert f"kafka={two_nodes[1].kafka_port}" in text


def test_a_node_paused_past_its_lease_registers_again_with_a_new_epoch(
    two_nodes: list[WharfProcess],
) -> None:
    watcher, paused = two_nodes

    def paused_row() -> dict[str, object]:
        nodes = api_cluster(watcher)["nodes"]
        assert isinstance(nodes, list)
        row: dict[str, object] = next(n for n in nodes if not n["this_node"])
        return row

    before = paused_row()
    os.kill(paused.pid, signal.SIGSTOP)
    try:
        eventually(lambda: len(kafka_brokers(watcher)) == 1)  # late heartbeats: not routed to
        eventually(lambda: paused_row()["live"] is False)  # then past its lease
    finally:
        os.kill(paused.pid, signal.SIGCONT)
    paused.wait_for_log(r"registering again", timeout=MARGIN_S)
    eventually(lambda: len(kafka_brokers(watcher)) == 2)
    after = paused_row()
    assert after["live"] and after["broker_id"] == before["broker_id"]
    assert isinstance(after["epoch"], int) and isinstance(before["epoch"], int)
    assert after["epoch"] > before["epoch"]


def test_metrics_count_the_background_jobs(engines: Engines, start_wharf: StartWharf) -> None:
    env = {**engines.env, "WHARF_CLUSTER_JOBS_INTERVAL_MS": "100"}
    node = start_wharf(*engines.flags(), env=env)

    def runs() -> dict[str, float]:
        text = httpx.get(f"{node.http_url}/metrics", timeout=10).text
        return {
            m.group(1): float(m.group(2))
            for m in re.finditer(r'^wharf_cluster_job_runs_total\{job="(\w+)"\} (\S+)$', text, re.M)
        }

    # the only node holds every job's lease: each job that runs on the short interval counts
    eventually(lambda: all(runs().get(job, 0) >= 2 for job in ("compactor", "gc", "orphans")))
    text = httpx.get(f"{node.http_url}/metrics", timeout=10).text
    for job in ("compactor", "retention", "gc", "orphans"):
        assert re.search(rf'^wharf_cluster_job_items_total\{{job="{job}"\}} ', text, re.M)
        assert re.search(rf'^wharf_cluster_job_failures_total\{{job="{job}"\}} 0\.0$', text, re.M)
