"""What a running broker reports about its AMQP clients: request latency histograms at
/metrics, one log line per connection open and close (a warning with the reason when the
broker closed it), and connection figures at /api/connections."""

from __future__ import annotations

import re
import socket
import time

import httpx
import pika
import pytest

from helpers.broker_process import WharfProcess
from helpers.observability import connection_lines, request_histograms

pytestmark = pytest.mark.interop

def count(histograms: dict[str, dict[str, float]], operation: str) -> float:
    return histograms.get(operation, {}).get("count", 0.0)


def connect(server: WharfProcess, name: str) -> pika.BlockingConnection:
    assert server.amqp_port is not None
    params = pika.ConnectionParameters(
        "127.0.0.1", server.amqp_port, client_properties={"connection_name": name}
    )
    return pika.BlockingConnection(params)


def test_request_latency_counts_synchronous_methods_and_confirmed_publishes(
    wharf_server: WharfProcess,
) -> None:
    before = request_histograms(wharf_server, "amqp", "confirm mode")
    connection = connect(wharf_server, "latency")
    try:
        channel = connection.channel()
        channel.queue_declare("obs-latency", durable=True)
        channel.basic_publish("", "obs-latency", b"unconfirmed")
        channel.confirm_delivery()
        for i in range(5):
            channel.basic_publish(
                "", "obs-latency", f"m{i}".encode(), pika.BasicProperties(delivery_mode=2)
            )
        got = [channel.basic_get("obs-latency", auto_ack=True) for _ in range(3)]
        assert all(method is not None for method, _, _ in got)
    finally:
        connection.close()
    after = request_histograms(wharf_server, "amqp", "confirm mode")
    for operation, at_least in [
        ("Connection.Open", 1),
        ("Channel.Open", 1),
        ("Queue.Declare", 1),
        ("Confirm.Select", 1),
        ("Basic.Get", 3),
        ("Basic.Publish", 5),
    ]:
        assert count(after, operation) >= count(before, operation) + at_least, (
            operation, before, after
        )
        assert after[operation]["sum"] > before.get(operation, {}).get("sum", 0.0), operation
    # Only the five publishes made in confirm mode are timed; the first one is not.
    assert count(after, "Basic.Publish") == count(before, "Basic.Publish") + 5


def test_connection_figures_and_one_open_and_one_close_line(wharf_server: WharfProcess) -> None:
    name = "figures-client"
    connection = connect(wharf_server, name)
    try:
        channel = connection.channel()
        channel.queue_declare("obs-figures")
        channel.confirm_delivery()
        channel.basic_publish("", "obs-figures", b"x" * 5000)
        listed = httpx.get(f"{wharf_server.http_url}/api/connections", timeout=30).json()
        mine = [c for c in listed if c["protocol"] == "amqp" and c["client_id"] == name]
        assert len(mine) == 1, listed
        (conn,) = mine
        assert re.fullmatch(r"amqp-\d+", conn["id"]), conn
        assert conn["user"] == "guest" and conn["vhost"] == "/"
        # Connection.Open, Channel.Open, Queue.Declare, Confirm.Select, Basic.Publish at least.
        assert conn["requests"] >= 5, conn
        assert conn["bytes_in"] > 5000, conn
        assert conn["bytes_out"] > 0, conn
        assert 0 < conn["connected_since_ms"] <= time.time() * 1000 + 1000
    finally:
        connection.close()
    number = conn["id"].removeprefix("amqp-")
    closed = wharf_server.wait_for_log(
        rf"amqp connection {number} closed( .*)$"
    )
    line = closed.group(0)
    events = [(m["event"], m["level"]) for m in connection_lines(wharf_server, "amqp")
              if m["conn"] == number]
    # The client sent Connection.Close: an info line without a reason.
    assert events == [("opened", "INFO"), ("closed", "INFO")], (events, wharf_server.log_text())
    assert "reason=" not in line
    assert "user=guest" in line and f"connection_name={name}" in line
    assert 'client="Pika Python Client Library"' in line, line
    figures = dict(re.findall(r"(requests|bytes_in|bytes_out)=(\d+)", line))
    assert int(figures["requests"]) >= 5 and int(figures["bytes_in"]) > 5000, line
    assert int(figures["bytes_out"]) > 0, line


def test_bad_input_is_logged_as_a_warning_with_the_reason(wharf_server: WharfProcess) -> None:
    assert wharf_server.amqp_port is not None
    with socket.create_connection(("127.0.0.1", wharf_server.amqp_port), timeout=15) as sock:
        peer = f"127.0.0.1:{sock.getsockname()[1]}"
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        sock.recv(65536)  # Connection.Start
        # A method frame whose frame-end octet is wrong: 501 FRAME_ERROR, then hang up.
        sock.sendall(b"\x01\x00\x00\x00\x00\x00\x04\x00\x0a\x00\x0b\x00")
        deadline = time.monotonic() + 30
        while sock.recv(65536):
            assert time.monotonic() < deadline
    opened = wharf_server.wait_for_log(rf"amqp connection (\d+) opened from {re.escape(peer)} ")
    conn = opened.group(1)
    closed = wharf_server.wait_for_log(
        rf"WARNING wharf\.connections: amqp connection {conn} closed abnormally: (.*)$"
    )
    assert "FRAME_ERROR" in closed.group(1), closed.group(0)
    assert "reason=" in closed.group(0)
    events = [m["event"] for m in connection_lines(wharf_server, "amqp") if m["conn"] == conn]
    assert events == ["opened", "closed"], events


def closed_abnormally(server: WharfProcess, number: str) -> str:
    """The reason of connection ``number``'s warning close line."""
    line = server.wait_for_log(
        rf"WARNING wharf\.connections: amqp connection {number} closed abnormally: (.*)$"
    )
    return line.group(1)


def test_operator_close_and_refused_login_are_warnings_with_the_reason(
    wharf_server: WharfProcess,
) -> None:
    connection = connect(wharf_server, "to-be-closed")
    try:
        listed = httpx.get(f"{wharf_server.http_url}/api/connections", timeout=30).json()
        (conn,) = [c for c in listed if c["client_id"] == "to-be-closed"]
        deleted = httpx.delete(f"{wharf_server.http_url}/api/connections/{conn['id']}", timeout=30)
        assert deleted.status_code in (200, 204), deleted.text
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
            connection.process_data_events(time_limit=10)
        assert info.value.reply_code == 320
    finally:
        if connection.is_open:
            connection.close()
    reason = closed_abnormally(wharf_server, conn["id"].removeprefix("amqp-"))
    assert "closed by an operator" in reason

    assert wharf_server.amqp_port is not None
    params = pika.ConnectionParameters(
        "127.0.0.1",
        wharf_server.amqp_port,
        credentials=pika.PlainCredentials("guest", "wrong password"),
    )
    with pytest.raises(pika.exceptions.ProbableAuthenticationError):
        pika.BlockingConnection(params)
    refused = wharf_server.wait_for_log(
        r"WARNING wharf\.connections: amqp connection (\d+) closed abnormally: "
        r"authentication failed for user 'guest'"
    )
    assert refused


def test_client_hanging_up_without_close_is_an_info_line(wharf_server: WharfProcess) -> None:
    assert wharf_server.amqp_port is not None
    with socket.create_connection(("127.0.0.1", wharf_server.amqp_port), timeout=15) as sock:
        peer = f"127.0.0.1:{sock.getsockname()[1]}"
        sock.sendall(b"AMQP\x00\x00\x09\x01")
        assert sock.recv(65536)  # Connection.Start; then hang up
    opened = wharf_server.wait_for_log(rf"amqp connection (\d+) opened from {re.escape(peer)} ")
    conn = opened.group(1)
    closed = wharf_server.wait_for_log(rf"(\w+) wharf\.connections: amqp connection {conn} closed")
    assert closed.group(1) == "INFO", closed.group(0)
