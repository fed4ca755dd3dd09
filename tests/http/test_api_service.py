"""Health, readiness, overview, rate history, connections, the OpenAPI document and the body
size limit, against a running broker."""

from __future__ import annotations

import re
import socket
import time

import httpx
import pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers.broker_process import WharfProcess
from wharf.http.app import DEFAULT_MAX_BODY_BYTES


def test_cluster_outside_a_cluster_says_single_node(api: httpx.Client) -> None:
    assert api.get("/api/cluster").json() == {
        "mode": "single-node",
        "node_id": None,
        "broker_id": None,
        "cluster_id": None,
        "nodes": [],
    }
    metrics = api.get("/metrics").text  # the engines' histograms exist, empty
    assert "# TYPE wharf_database_seconds histogram" in metrics
    assert "wharf_database_seconds_count" not in metrics


def test_health_and_readiness(api: httpx.Client, http_server: WharfProcess) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    ready = api.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["ready"] is True
    assert body["storage_recovered"] is True
    names = {listener["name"]: listener for listener in body["listeners"]}
    assert set(names) == set(http_server.endpoints)
    assert names["http"]["port"] == http_server.http_port
    assert all(listener["ready"] for listener in body["listeners"])


def test_overview_counts_what_exists(api: httpx.Client, unique: str) -> None:
    before = api.get("/api/overview").json()
    assert before["version"]
    assert before["fsync"] == "always"
    assert before["uptime_s"] >= 0
    api.post("/api/topics", json={"name": unique, "partitions": 3})
    api.put(f"/api/queues/{unique}", json={})
    api.post(f"/api/queues/{unique}/messages", json={"value": "x"})
    after = api.get("/api/overview").json()
    assert after["totals"]["topics"] == before["totals"]["topics"] + 1
    assert after["totals"]["partitions"] == before["totals"]["partitions"] + 3
    assert after["totals"]["queues"] == before["totals"]["queues"] + 1
    assert after["totals"]["queue_depth"] == before["totals"]["queue_depth"] + 1
    assert after["totals"]["messages_published"] == before["totals"]["messages_published"] + 1


def test_history_records_publish_rate(api: httpx.Client, unique: str) -> None:
    api.post("/api/topics", json={"name": unique})
    for i in range(20):
        api.post(f"/api/topics/{unique}/messages", json={"value": str(i)})
    deadline = time.monotonic() + 20
    while True:
        samples = api.get("/api/history").json()["samples"]
        if any(s["publish_per_s"] > 0 for s in samples):
            break
        assert time.monotonic() < deadline, "no sample ever showed the publishes"
        time.sleep(0.2)
    assert all(s["time_ms"] > 0 and s["consumer_lag"] >= 0 for s in samples)


def test_connections_lists_and_closes_clients(
    api: httpx.Client, http_server: WharfProcess, unique: str
) -> None:
    params = pika.ConnectionParameters(
        "127.0.0.1", http_server.amqp_port, client_properties={"connection_name": unique}
    )
    amqp = pika.BlockingConnection(params)
    kafka = socket.create_connection(("127.0.0.1", http_server.kafka_port))
    try:
        deadline = time.monotonic() + 20
        while True:
            listed = api.get("/api/connections").json()
            mine = [c for c in listed if c["client_id"] == unique]
            kafka_peer = f"127.0.0.1:{kafka.getsockname()[1]}"
            kafka_conns = [c for c in listed if c["peer"] == kafka_peer]
            if mine and kafka_conns:
                break
            assert time.monotonic() < deadline, listed
            time.sleep(0.05)
        [conn] = mine
        assert conn["protocol"] == "amqp"
        assert conn["user"] == "guest"
        assert conn["vhost"] == "/"
        assert conn["peer"].startswith("127.0.0.1:")
        assert kafka_conns[0]["protocol"] == "kafka"
        gauges = {
            sample.labels["protocol"]: sample.value
            for family in text_string_to_metric_families(api.get("/metrics").text)
            if family.name == "wharf_connections"
            for sample in family.samples
        }
        assert gauges["amqp"] >= 1 and gauges["kafka"] >= 1
        assert api.get("/api/overview").json()["totals"]["connections"] >= 2

        assert api.delete(f"/api/connections/{conn['id']}").status_code == 204
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker):
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                amqp.process_data_events(time_limit=0.1)
        assert api.delete(f"/api/connections/{kafka_conns[0]['id']}").status_code == 204
        kafka.settimeout(20)
        assert kafka.recv(1) == b""  # the broker closed the socket
        number = kafka_conns[0]["id"].removeprefix("kafka-")
        http_server.wait_for_log(
            rf"WARNING wharf\.connections: kafka connection {number} closed abnormally: "
            r"closed by an operator"
        )
        deadline = time.monotonic() + 20
        while any(c["id"] == conn["id"] for c in api.get("/api/connections").json()):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        kafka.close()
        if amqp.is_open:
            amqp.close()
    missing = api.delete("/api/connections/no-such-connection")
    assert missing.status_code == 404
    assert "no-such-connection" in missing.json()["error"]


def test_openapi_describes_every_route(api: httpx.Client) -> None:
    document = api.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    described = {
        (method.upper(), path) for path, ops in document["paths"].items() for method in ops
    }
    # every route the API serves (from the served document's own source of truth: the app)
    from wharf.http.app import all_endpoints

    served = {(e.method, e.path) for e in all_endpoints()}
    assert served == described
    assert len(served) >= 30
    for path, ops in document["paths"].items():
        for method, op in ops.items():
            assert op["summary"], (method, path)
            assert "4XX" in op["responses"], (method, path)
            for name in re.findall(r"{(\w+)}", path):
                assert any(p["name"] == name and p["in"] == "path" for p in op["parameters"])
    create = document["paths"]["/api/topics"]["post"]
    ref = create["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = document["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert schema["required"] == ["name"]
    assert "partitions" in schema["properties"]


def test_oversized_body_is_refused_with_413(api: httpx.Client, unique: str) -> None:
    api.post("/api/topics", json={"name": unique})
    big = b'{"value": "' + b"x" * (DEFAULT_MAX_BODY_BYTES + 10) + b'"}'
    refused = api.post(
        f"/api/topics/{unique}/messages",
        content=big,
        headers={"Content-Type": "application/json"},
    )
    assert refused.status_code == 413
    assert "error" in refused.json()
    assert api.get(f"/api/topics/{unique}").json()["messages"] == 0


def test_dashboard_assets_are_local(api: httpx.Client) -> None:
    page = api.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert "/static/app.js" in assets and "/static/chart.js" in assets
    for asset in assets:
        assert asset.startswith(("/static/", "data:", "#/")), asset  # nothing from elsewhere
    for name in ("app.js", "chart.js", "style.css"):
        body = api.get(f"/static/{name}")
        assert body.status_code == 200
        assert not re.search(r"https?://", body.text), name
    assert api.get("/static/nothing.js").status_code == 404
    assert api.get("/static/app.py").status_code == 404
