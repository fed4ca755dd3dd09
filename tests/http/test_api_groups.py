"""Consumer group endpoints: a real Kafka consumer group (kafka-python) shows its members,
assignments, committed offsets and lag; offsets are reset (dry run first); groups deleted."""

from __future__ import annotations

import time

import httpx
from kafka import KafkaConsumer, TopicPartition
from kafka.structs import OffsetAndMetadata

from helpers.broker_process import WharfProcess


def _produce(api: httpx.Client, topic: str, partition: int, count: int) -> None:
    for i in range(count):
        sent = api.post(
            f"/api/topics/{topic}/messages", json={"value": f"v{i}", "partition": partition}
        )
        assert sent.status_code == 201, sent.text


def test_live_group_members_offsets_and_lag(
    api: httpx.Client, http_server: WharfProcess, unique: str
) -> None:
    topic, group = f"{unique}-t", f"{unique}-g"
    assert api.post("/api/topics", json={"name": topic, "partitions": 2}).status_code == 201
    _produce(api, topic, 0, 6)
    _produce(api, topic, 1, 4)
    consumer = KafkaConsumer(
        bootstrap_servers=http_server.kafka_bootstrap,
        group_id=group,
        client_id="h7-test-client",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=10_000,
    )
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while not consumer.assignment():
            assert time.monotonic() < deadline, "the consumer never got an assignment"
            consumer.poll(timeout_ms=200)
        consumer.commit(
            {
                TopicPartition(topic, 0): OffsetAndMetadata(2, "", -1),
                TopicPartition(topic, 1): OffsetAndMetadata(4, "", -1),
            }
        )
        detail = api.get(f"/api/groups/{group}").json()
        assert detail["state"] == "Stable"
        assert detail["protocol_type"] == "consumer"
        [member] = detail["members"]
        assert member["client_id"] == "h7-test-client"
        assert member["assignments"] == [{"topic": topic, "partitions": [0, 1]}]
        assert detail["offsets"] == [
            {"topic": topic, "partition": 0, "committed": 2, "high_watermark": 6, "lag": 4},
            {"topic": topic, "partition": 1, "committed": 4, "high_watermark": 4, "lag": 0},
        ]
        assert detail["lag"] == 4
        listed = {g["group"]: g for g in api.get("/api/groups").json()}
        assert listed[group]["members"] == 1
        assert listed[group]["lag"] == 4
        topic_view = api.get(f"/api/topics/{topic}").json()
        assert {"group": group, "lag": 4} in topic_view["groups"]

        busy = api.post(
            f"/api/groups/{group}/reset-offsets", json={"to": "earliest", "execute": True}
        )
        assert busy.status_code == 409
        assert "active members" in busy.json()["error"]
        assert api.delete(f"/api/groups/{group}").status_code == 409
    finally:
        consumer.close()


def test_reset_offsets_dry_run_then_execute(api: httpx.Client, unique: str) -> None:
    topic, group = f"{unique}-t", f"{unique}-g"
    assert api.post("/api/topics", json={"name": topic, "partitions": 2}).status_code == 201
    _produce(api, topic, 0, 5)
    _produce(api, topic, 1, 3)

    plan = api.post(f"/api/groups/{group}/reset-offsets", json={"to": "latest", "topic": topic})
    assert plan.status_code == 200, plan.text
    assert plan.json() == {
        "group": group,
        "executed": False,
        "changes": [
            {"topic": topic, "partition": 0, "current": None, "new": 5},
            {"topic": topic, "partition": 1, "current": None, "new": 3},
        ],
    }
    assert api.get(f"/api/groups/{group}").status_code == 404  # the dry run changed nothing

    done = api.post(
        f"/api/groups/{group}/reset-offsets",
        json={"to": "offset", "offset": 1, "topic": topic, "partitions": [0], "execute": True},
    )
    assert done.json()["executed"] is True
    offsets = api.get(f"/api/groups/{group}").json()["offsets"]
    assert offsets == [
        {"topic": topic, "partition": 0, "committed": 1, "high_watermark": 5, "lag": 4}
    ]

    # without a topic, a reset covers the partitions the group has committed
    earliest = api.post(
        f"/api/groups/{group}/reset-offsets", json={"to": "earliest", "execute": True}
    ).json()
    assert earliest["changes"] == [{"topic": topic, "partition": 0, "current": 1, "new": 0}]

    future = int(time.time() * 1000) + 3_600_000
    by_time = api.post(
        f"/api/groups/{group}/reset-offsets",
        json={"to": "timestamp", "timestamp_ms": future, "topic": topic},
    ).json()
    assert [c["new"] for c in by_time["changes"]] == [5, 3]  # nothing that late: the end
    past = api.post(
        f"/api/groups/{group}/reset-offsets",
        json={"to": "timestamp", "timestamp_ms": 0, "topic": topic},
    ).json()
    assert [c["new"] for c in past["changes"]] == [0, 0]

    bad = api.post(f"/api/groups/{group}/reset-offsets", json={"to": "offset", "topic": topic})
    assert bad.status_code == 400
    no_such = api.post(
        f"/api/groups/{group}/reset-offsets",
        json={"to": "latest", "topic": topic, "partitions": [9]},
    )
    assert no_such.status_code == 400
    wrong = api.post(f"/api/groups/{group}/reset-offsets", json={"to": "yesterday"})
    assert wrong.status_code == 400

    assert api.delete(f"/api/groups/{group}").status_code == 204
    assert api.get(f"/api/groups/{group}").status_code == 404
    assert api.delete(f"/api/groups/{group}").status_code == 404
