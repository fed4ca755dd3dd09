"""Users over the HTTP API and the CLI, logging in with real AMQP and Kafka (SASL PLAIN) clients,
and kept across a restart."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pika
import pytest
from confluent_kafka import KafkaError, Producer
from pika.exceptions import ProbableAccessDeniedError, ProbableAuthenticationError
from typer.testing import CliRunner

from helpers.broker_process import WharfProcess
from wharf.cli.app import app
from wharf.core.broker import Broker
from wharf.http.app import start_http


def amqp_login(server: WharfProcess, user: str, password: str, vhost: str = "/") -> None:
    assert server.amqp_port is not None
    connection = pika.BlockingConnection(
        pika.ConnectionParameters(
            "127.0.0.1",
            server.amqp_port,
            vhost,
            pika.PlainCredentials(user, password),
            connection_attempts=1,
        )
    )
    try:
        channel = connection.channel()
        channel.queue_declare(f"{user}-queue")
    finally:
        connection.close()


def kafka_produce(server: WharfProcess, user: str, password: str) -> list[KafkaError]:
    errors: list[KafkaError] = []
    producer = Producer(
        {
            "bootstrap.servers": server.kafka_bootstrap,
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": user,
            "sasl.password": password,
            "error_cb": errors.append,
            "message.timeout.ms": 5000,
        }
    )
    producer.produce("users-topic", value=b"from " + user.encode(), partition=0,
                     on_delivery=lambda err, msg: errors.append(err) if err else None)
    producer.flush(10)
    return errors


def test_users_log_in_over_amqp_and_kafka_and_outlive_a_restart(
    start_wharf: Callable[..., WharfProcess], tmp_path: Path
) -> None:
    server = start_wharf(data_dir=tmp_path / "data", env={"WHARF_KAFKA_SASL_PLAIN": "true"})
    with httpx.Client(base_url=server.http_url, timeout=30) as api:
        created = api.put("/api/users/alice", json={"password": "s3cret", "tags": ["ops"]})
        assert created.status_code == 200, created.text
        assert created.json() == {
            "name": "alice", "tags": ["ops"], "loopback_only": False, "permissions": {}
        }
        assert "s3cret" not in api.get("/api/users").text
        # Kafka needs only the login; AMQP also needs access to the vhost.
        assert kafka_produce(server, "alice", "s3cret") == []
        with pytest.raises(ProbableAccessDeniedError):
            amqp_login(server, "alice", "s3cret")
        granted = api.put("/api/users/alice/permissions", json={}, params={"vhost": "/"})
        assert granted.json()["permissions"] == {"/": {"configure": ".*", "write": ".*",
                                                       "read": ".*"}}
        amqp_login(server, "alice", "s3cret")
        with pytest.raises(ProbableAuthenticationError):
            amqp_login(server, "alice", "wrong")
        assert any(e.code() == KafkaError._AUTHENTICATION
                   for e in kafka_produce(server, "alice", "wrong"))

        # Bad requests get 4xx with a reason.
        assert api.put("/api/users/bob", json={"password": ""}).status_code == 400
        assert api.put("/api/users/bob", json={"password": "x", "admin": True}).status_code == 400
        assert api.put("/api/users/nobody/permissions", json={},
                       params={"vhost": "/"}).status_code == 404
        assert api.put("/api/users/alice/permissions", json={},
                       params={"vhost": "no-such-vhost"}).status_code == 404
        assert api.put("/api/users/alice/permissions", json={"read": "("},
                       params={"vhost": "/"}).status_code == 400

    server.restart()
    with httpx.Client(base_url=server.http_url, timeout=30) as api:
        assert api.get("/api/users/alice").json()["permissions"] == {
            "/": {"configure": ".*", "write": ".*", "read": ".*"}
        }
        amqp_login(server, "alice", "s3cret")
        assert api.delete("/api/users/alice/permissions", params={"vhost": "/"}).status_code == 204
        with pytest.raises(ProbableAccessDeniedError):
            amqp_login(server, "alice", "s3cret")
        assert api.delete("/api/users/alice").status_code == 204
        assert api.get("/api/users/alice").status_code == 404
        assert any(e.code() == KafkaError._AUTHENTICATION
                   for e in kafka_produce(server, "alice", "s3cret"))


def test_cli_manages_users(start_wharf: Callable[..., WharfProcess]) -> None:
    server = start_wharf()
    runner = CliRunner()

    def wharf(*args: str) -> str:
        result = runner.invoke(app, [*args, "--url", server.http_url])
        assert result.exit_code == 0, result.output
        return result.output

    assert "user carol saved with full access to vhost /" in wharf(
        "user", "add", "carol", "--password", "pw", "--tag", "monitoring"
    )
    amqp_login(server, "carol", "pw")
    wharf("user", "permit", "carol", "--vhost", "/", "--configure", "^carol-")
    listed = {u["name"]: u for u in json.loads(wharf("user", "list", "--json"))}
    assert listed["carol"]["permissions"]["/"]["configure"] == "^carol-"
    assert listed["carol"]["tags"] == ["monitoring"]
    assert listed["guest"]["loopback_only"] is True
    wharf("user", "revoke", "carol")
    wharf("user", "delete", "carol")
    assert "carol" not in {u["name"] for u in json.loads(wharf("user", "list", "--json"))}
    result = runner.invoke(app, ["user", "delete", "carol", "--url", server.http_url])
    assert result.exit_code != 0 and "no user 'carol'" in result.output


class _ThreadRecordingDict(dict[str, Any]):
    """The user table, noting the thread of every change."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.threads: list[str] = []

    def __setitem__(self, key: str, value: Any) -> None:
        self.threads.append(threading.current_thread().name)
        super().__setitem__(key, value)


async def test_a_new_user_is_hashed_off_the_loop_and_stored_on_it(tmp_path: Path) -> None:
    """The password is hashed on a worker thread, but the user table the event loop reads
    (logins, snapshots for the definitions file) only changes on the loop's own thread."""
    async with Broker.open(tmp_path / "data") as broker:
        table = _ThreadRecordingDict(broker.users.users)
        broker.users.users = table
        server = await start_http(broker, "127.0.0.1", 0)
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
                put = await client.put("/api/users/carol", json={"password": "pw-carol"})
                assert put.status_code == 200, put.text
        finally:
            await server.close()
        assert table.threads == [threading.current_thread().name]
        broker.users.authenticate("carol", "pw-carol")
