"""Queue, exchange and binding endpoints against a running broker, with a real AMQP client
where the API reports what clients do (consumers, unacked, deliveries)."""

from __future__ import annotations

import time

import httpx
import pika

from helpers.broker_process import WharfProcess


def _wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_declare_publish_peek_get_purge_delete(api: httpx.Client, unique: str) -> None:
    declared = api.put(f"/api/queues/{unique}", json={"arguments": {"x-max-priority": 5}})
    assert declared.status_code == 200, declared.text
    assert declared.json()["arguments"] == {"x-max-priority": 5}
    assert declared.json()["durable"] is True
    again = api.put(f"/api/queues/{unique}", json={"arguments": {"x-max-priority": 5}})
    assert again.status_code == 200
    conflict = api.put(f"/api/queues/{unique}", json={"arguments": {"x-max-priority": 9}})
    assert conflict.status_code == 409
    assert "error" in conflict.json()

    for i in range(3):
        sent = api.post(
            f"/api/queues/{unique}/messages",
            json={"value": f"q{i}", "headers": {"n": str(i)}, "properties": {"priority": i}},
        )
        assert sent.status_code == 201
        assert sent.json()["routed"] is True

    peeked = api.post(f"/api/queues/{unique}/get", json={"count": 10}).json()["messages"]
    # highest priority first
    assert [m["value"] for m in peeked] == ["q2", "q1", "q0"]
    assert peeked[0]["headers"] == {"n": "2"}
    assert peeked[0]["properties"]["priority"] == 2
    described = api.get(f"/api/queues/{unique}").json()
    assert described["messages"] == 3  # peeking removed nothing

    taken = api.post(f"/api/queues/{unique}/get", json={"count": 1, "ack": True}).json()
    assert [m["value"] for m in taken["messages"]] == ["q2"]
    described = api.get(f"/api/queues/{unique}").json()
    assert described["messages"] == 2
    assert described["published"] == 3
    assert described["delivered"] == 1

    listed = {q["name"]: q for q in api.get("/api/queues", params={"vhost": "/"}).json()}
    assert listed[unique]["messages"] == 2

    purged = api.post(f"/api/queues/{unique}/purge")
    assert purged.json() == {"purged": 2}
    assert api.get(f"/api/queues/{unique}").json()["messages"] == 0

    assert api.delete(f"/api/queues/{unique}").status_code == 204
    assert api.get(f"/api/queues/{unique}").status_code == 404
    assert api.post(f"/api/queues/{unique}/messages", json={"value": "x"}).status_code == 404


def test_delete_if_empty_refuses_a_queue_with_messages(api: httpx.Client, unique: str) -> None:
    api.put(f"/api/queues/{unique}", json={})
    api.post(f"/api/queues/{unique}/messages", json={"value": "keep me"})
    refused = api.delete(f"/api/queues/{unique}", params={"if_empty": "true"})
    assert refused.status_code == 409
    assert api.get(f"/api/queues/{unique}").json()["messages"] == 1
    assert api.delete(f"/api/queues/{unique}").status_code == 204


def test_exchanges_and_bindings_route_messages(api: httpx.Client, unique: str) -> None:
    exchange, queue = f"{unique}-x", f"{unique}-q"
    created = api.put(f"/api/exchanges/{exchange}", json={"type": "topic"})
    assert created.status_code == 200, created.text
    assert created.json()["type"] == "topic"
    assert api.get(f"/api/exchanges/{exchange}").json()["name"] == exchange
    assert exchange in {x["name"] for x in api.get("/api/exchanges").json()}
    api.put(f"/api/queues/{queue}", json={})

    bound = api.post(
        "/api/bindings", json={"source": exchange, "destination": queue, "routing_key": "a.*"}
    )
    assert bound.status_code == 204, bound.text
    bindings = [b for b in api.get("/api/bindings").json() if b["source"] == exchange]
    assert bindings == [
        {
            "vhost": "/",
            "source": exchange,
            "destination": queue,
            "destination_type": "queue",
            "routing_key": "a.*",
            "arguments": {},
        }
    ]

    hit = api.post(f"/api/exchanges/{exchange}/messages", json={"value": "1", "routing_key": "a.b"})
    miss = api.post(f"/api/exchanges/{exchange}/messages", json={"value": "2", "routing_key": "b"})
    assert hit.json()["routed"] is True
    assert miss.json()["routed"] is False
    got = api.post(f"/api/queues/{queue}/get", json={"count": 5}).json()["messages"]
    assert [(m["value"], m["exchange"], m["routing_key"]) for m in got] == [("1", exchange, "a.b")]

    unbound = api.request(
        "DELETE",
        "/api/bindings",
        json={"source": exchange, "destination": queue, "routing_key": "a.*"},
    )
    assert unbound.status_code == 204
    assert not [b for b in api.get("/api/bindings").json() if b["source"] == exchange]

    assert api.put("/api/exchanges/amq.mine", json={}).status_code == 403
    assert api.put(f"/api/exchanges/{unique}-bad", json={"type": "nope"}).status_code == 400
    assert api.delete(f"/api/exchanges/{exchange}").status_code == 204
    assert api.get(f"/api/exchanges/{exchange}").status_code == 404


def test_queue_reports_amqp_consumers_and_unacked(
    api: httpx.Client, http_server: WharfProcess, unique: str
) -> None:
    api.put(f"/api/queues/{unique}", json={})
    for i in range(4):
        api.post(f"/api/queues/{unique}/messages", json={"value": str(i)})
    params = pika.ConnectionParameters("127.0.0.1", http_server.amqp_port)
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=2)
        received: list[bytes] = []
        channel.basic_consume(unique, lambda ch, method, props, body: received.append(body))

        def pump() -> bool:
            connection.process_data_events(time_limit=0.05)
            return len(received) == 2

        _wait_for(pump)
        queue = api.get(f"/api/queues/{unique}").json()
        assert queue["consumers"] == 1
        assert queue["unacked"] == 2
        assert queue["messages"] == 2
        assert queue["delivered"] == 2
    finally:
        connection.close()
    _wait_for(lambda: api.get(f"/api/queues/{unique}").json()["consumers"] == 0)
    assert api.get(f"/api/queues/{unique}").json()["messages"] == 4  # returned on close


def test_an_invalid_queue_argument_is_a_bad_request(api: httpx.Client, unique: str) -> None:
    # 400 for a value that can never be valid; 409 stays for a conflict with what exists.
    invalid = api.put(f"/api/queues/{unique}", json={"arguments": {"x-max-length": "abc"}})
    assert invalid.status_code == 400, invalid.text
    assert "x-max-length" in invalid.json()["error"]


def test_describe_shows_type_bindings_and_consumers(
    api: httpx.Client, http_server: WharfProcess, unique: str
) -> None:
    queue, other, exchange = f"{unique}-q", f"{unique}-other", f"{unique}-x"
    single_active = {"x-single-active-consumer": True}
    assert api.put(f"/api/queues/{queue}", json={"arguments": single_active}).status_code == 200
    api.put(f"/api/queues/{other}", json={"arguments": {"x-queue-type": "quorum"}})
    api.put(f"/api/exchanges/{exchange}", json={"type": "topic"})
    for destination, key in ((queue, "a.#"), (other, "b.#")):
        bound = api.post(
            "/api/bindings",
            json={"source": exchange, "destination": destination, "routing_key": key},
        )
        assert bound.status_code == 204, bound.text

    described = api.get(f"/api/queues/{queue}").json()
    assert described["type"] == "classic"
    assert api.get(f"/api/queues/{other}").json()["type"] == "quorum"
    assert described["arguments"] == single_active
    # only the bindings that route to this queue (the default exchange's implicit one is not
    # an explicit binding, as in GET /api/bindings)
    assert described["bindings"] == [
        {
            "vhost": "/",
            "source": exchange,
            "destination": queue,
            "destination_type": "queue",
            "routing_key": "a.#",
            "arguments": {},
        }
    ]
    assert described["consumer_details"] == []

    params = pika.ConnectionParameters("127.0.0.1", http_server.amqp_port)
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        first = channel.basic_consume(queue, lambda *_: None, consumer_tag=f"{unique}-first")
        second = channel.basic_consume(
            queue, lambda *_: None, auto_ack=True, consumer_tag=f"{unique}-second"
        )
        _wait_for(lambda: api.get(f"/api/queues/{queue}").json()["consumers"] == 2)
        described = api.get(f"/api/queues/{queue}").json()
        # single active consumer: the first subscriber receives, the second waits its turn
        assert described["consumer_details"] == [
            {"tag": first, "ack_required": True, "exclusive": False, "active": True},
            {"tag": second, "ack_required": False, "exclusive": False, "active": False},
        ]
    finally:
        connection.close()
    _wait_for(lambda: api.get(f"/api/queues/{queue}").json()["consumer_details"] == [])
    assert api.get(f"/api/queues/{unique}-missing").status_code == 404

    # the OpenAPI document describes what is served
    document = api.get("/openapi.json").json()
    response = document["paths"]["/api/queues/{name}"]["get"]["responses"]["200"]
    ref = response["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]
    schema = document["components"]["schemas"][ref]
    assert {"type", "bindings", "consumer_details"} <= set(schema["required"])
    consumer_ref = schema["properties"]["consumer_details"]["items"]["$ref"].rsplit("/", 1)[1]
    assert set(document["components"]["schemas"][consumer_ref]["properties"]) == {
        "tag",
        "ack_required",
        "exclusive",
        "active",
    }


def test_a_queues_rates_show_its_traffic_and_an_idle_queues_stay_zero(
    api: httpx.Client, http_server: WharfProcess, unique: str
) -> None:
    busy, idle = f"{unique}-busy", f"{unique}-idle"
    params = pika.ConnectionParameters("127.0.0.1", http_server.amqp_port)
    connection = pika.BlockingConnection(params)
    try:
        channel = connection.channel()
        channel.queue_declare(busy)
        channel.queue_declare(idle)
        deadline = time.monotonic() + 20
        while api.get(f"/api/queues/{busy}").json()["publish_per_s"] == 0:
            assert time.monotonic() < deadline, "no sample ever showed the publishes"
            for _ in range(10):
                channel.basic_publish("", busy, b"m")
            time.sleep(0.05)
        assert api.get(f"/api/queues/{idle}").json()["publish_per_s"] == 0
    finally:
        connection.close()
