"""What a running broker reports about its Kafka clients: request latency histograms at /metrics,
one log line per connection open and close, and connection figures at /api/connections."""

from __future__ import annotations

import re
import socket
import struct
import time

import httpx
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from helpers.broker_process import WharfProcess
from helpers.observability import connection_lines, request_histograms

pytestmark = pytest.mark.interop

def test_request_latency_histograms_count_produce_fetch_and_metadata(
    kafka_server: WharfProcess, topic_name: str
) -> None:
    before = request_histograms(kafka_server, "kafka", "long poll")
    producer = KafkaProducer(bootstrap_servers=kafka_server.kafka_bootstrap, acks="all")
    try:
        for i in range(5):
            producer.send(topic_name, f"m{i}".encode(), partition=0).get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(
        bootstrap_servers=kafka_server.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=100,
    )
    try:
        consumer.assign([TopicPartition(topic_name, 0)])
        records: list[object] = []
        deadline = time.monotonic() + 30
        while len(records) < 5 and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
    finally:
        consumer.close()
    assert len(records) == 5
    after = request_histograms(kafka_server, "kafka", "long poll")
    for operation in ("Produce", "Fetch", "Metadata", "ApiVersions"):
        then = before.get(operation, {}).get("count", 0.0)
        assert after[operation]["count"] > then, (operation, before, after)
        assert after[operation]["sum"] > before.get(operation, {}).get("sum", 0.0), operation
    assert after["Produce"]["count"] >= before.get("Produce", {}).get("count", 0.0) + 5


def test_connections_show_client_figures_and_log_one_open_and_one_close(
    kafka_server: WharfProcess, topic_name: str
) -> None:
    client_id = f"obs-{topic_name}"
    producer = KafkaProducer(bootstrap_servers=kafka_server.kafka_bootstrap, client_id=client_id)
    try:
        producer.send(topic_name, b"x" * 1000).get(timeout=30)
        listed = httpx.get(f"{kafka_server.http_url}/api/connections", timeout=30).json()
        mine = [c for c in listed if c["client_id"] == client_id]
        assert mine, listed
        now_ms = time.time() * 1000
        for conn in mine:
            assert conn["protocol"] == "kafka"
            assert conn["id"].startswith("kafka-")
            assert conn["requests"] > 0
            assert conn["bytes_in"] > 0 and conn["bytes_out"] > 0
            assert 0 < conn["connected_since_ms"] <= now_ms + 1000
        # The connection that took the produce request received its 1000-byte value.
        assert max(c["bytes_in"] for c in mine) > 1000
    finally:
        producer.close()

    ids = {int(c["id"].removeprefix("kafka-")) for c in mine}
    deadline = time.monotonic() + 30
    while True:
        closed = {
            int(m["conn"])
            for m in connection_lines(kafka_server, "kafka")
            if m["event"] == "closed" and f"client_id={client_id} " in m["rest"] + " "
        }
        if ids <= closed:
            break
        assert time.monotonic() < deadline, (ids, kafka_server.log_text())
        time.sleep(0.05)
    lines = connection_lines(kafka_server, "kafka")
    for conn in closed:
        events = [(m["event"], m["level"]) for m in lines if int(m["conn"]) == conn]
        # The client closed its sockets itself: an info line, no reason.
        assert events == [("opened", "INFO"), ("closed", "INFO")], (conn, events)


def test_a_bad_frame_is_logged_as_a_warning_with_the_reason(kafka_server: WharfProcess) -> None:
    port = kafka_server.kafka_port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        peer = f"127.0.0.1:{sock.getsockname()[1]}"
        sock.sendall(struct.pack(">i", -1))
        assert sock.recv(1) == b""
    opened = kafka_server.wait_for_log(
        rf"kafka connection (\d+) opened from {re.escape(peer)} "
    )
    conn = opened.group(1)
    closed = kafka_server.wait_for_log(
        rf"WARNING wharf\.connections: kafka connection {conn} closed abnormally: (.*)"
    )
    assert "reason=" in closed.group(1)
    assert closed.group(1).startswith("protocol error: InvalidFrameLengthError")
    events = [m["event"] for m in connection_lines(kafka_server, "kafka") if m["conn"] == conn]
    assert events == ["opened", "closed"]


def test_a_client_resetting_its_connection_is_an_info_line(kafka_server: WharfProcess) -> None:
    port = kafka_server.kafka_port
    assert port is not None
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        peer = f"127.0.0.1:{sock.getsockname()[1]}"
        opened = kafka_server.wait_for_log(
            rf"kafka connection (\d+) opened from {re.escape(peer)} "
        )
        # leave with a reset, as a client process that is killed mid-request does
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn = opened.group(1)
    closed = kafka_server.wait_for_log(rf"(\w+) wharf\.connections: kafka connection {conn} closed")
    assert closed.group(1) == "INFO", closed.group(0)
