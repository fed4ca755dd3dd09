"""Virtual hosts over the HTTP API: created, granted, used by a real AMQP client, deleted."""

from __future__ import annotations

import httpx
import pika
import pytest
from pika.exceptions import ProbableAccessDeniedError

from helpers.broker_process import WharfProcess


def _connect(server: WharfProcess, vhost: str) -> pika.BlockingConnection:
    assert server.amqp_port is not None
    return pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", server.amqp_port, vhost, connection_attempts=1)
    )


def test_a_vhost_is_created_granted_used_and_deleted(
    api: httpx.Client, http_server: WharfProcess, unique: str
) -> None:
    created = api.put(f"/api/vhosts/{unique}")
    assert created.status_code == 201, created.text
    assert created.json() == {"name": unique, "queues": 0, "exchanges": 6}
    assert api.put(f"/api/vhosts/{unique}").status_code == 200
    assert unique in {v["name"] for v in api.get("/api/vhosts").json()}

    with pytest.raises(ProbableAccessDeniedError):
        _connect(http_server, unique)
    granted = api.put("/api/users/guest/permissions", json={}, params={"vhost": unique})
    assert granted.status_code == 200, granted.text
    connection = _connect(http_server, unique)
    try:
        connection.channel().queue_declare("only-here")
    finally:
        connection.close()
    assert api.get("/api/queues/only-here", params={"vhost": unique}).status_code == 200
    assert api.get("/api/queues/only-here", params={"vhost": "/"}).status_code == 404

    assert api.delete(f"/api/vhosts/{unique}").status_code == 204
    assert unique not in {v["name"] for v in api.get("/api/vhosts").json()}
    assert unique not in api.get("/api/users/guest").json()["permissions"]
    assert api.delete(f"/api/vhosts/{unique}").status_code == 404
    assert api.put("/api/users/guest/permissions", json={},
                   params={"vhost": unique}).status_code == 404
