"""Topic endpoints against a running broker: create, list, describe, alter, delete, publish,
read from an offset, and the JSON error bodies of bad requests."""

from __future__ import annotations

import base64

import httpx


def test_create_list_describe_alter_delete(api: httpx.Client, unique: str) -> None:
    created = api.post(
        "/api/topics",
        json={"name": unique, "partitions": 3, "configs": {"retention.ms": "3600000"}},
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["partition_count"] == 3
    assert [p["partition"] for p in body["partitions"]] == [0, 1, 2]
    assert body["configs"]["retention.ms"] == "3600000"

    listed = {t["name"]: t for t in api.get("/api/topics").json()}
    assert listed[unique]["partition_count"] == 3
    assert listed[unique]["messages"] == 0
    assert [p["high_watermark"] for p in listed[unique]["partitions"]] == [0, 0, 0]

    altered = api.patch(
        f"/api/topics/{unique}/configs",
        json={"configs": {"retention.ms": "120000", "max.message.bytes": "2000"}},
    )
    assert altered.status_code == 200, altered.text
    assert altered.json()["configs"]["retention.ms"] == "120000"
    assert altered.json()["configs"]["max.message.bytes"] == "2000"
    reset = api.patch(f"/api/topics/{unique}/configs", json={"configs": {"retention.ms": None}})
    assert reset.json()["configs"]["retention.ms"] == str(7 * 24 * 3600 * 1000)
    assert reset.json()["configs"]["max.message.bytes"] == "2000"

    assert api.delete(f"/api/topics/{unique}").status_code == 204
    missing = api.get(f"/api/topics/{unique}")
    assert missing.status_code == 404
    assert unique in missing.json()["error"]
    assert unique not in {t["name"] for t in api.get("/api/topics").json()}


def test_publish_then_read_from_offset(api: httpx.Client, unique: str) -> None:
    assert api.post("/api/topics", json={"name": unique, "partitions": 2}).status_code == 201
    offsets = []
    for i in range(5):
        sent = api.post(
            f"/api/topics/{unique}/messages",
            json={"value": f"m{i}", "key": "k", "headers": {"h": str(i)}, "partition": 1},
        )
        assert sent.status_code == 201, sent.text
        assert sent.json()["partition"] == 1
        offsets.append(sent.json()["offset"])
    assert offsets == [0, 1, 2, 3, 4]
    binary = bytes([0, 255, 1, 254])
    sent = api.post(
        f"/api/topics/{unique}/messages",
        json={"value": base64.b64encode(binary).decode(), "encoding": "base64", "partition": 1},
    )
    assert sent.json()["offset"] == 5

    page = api.get(
        f"/api/topics/{unique}/partitions/1/messages", params={"offset": 2, "limit": 2}
    ).json()
    assert [m["value"] for m in page["messages"]] == ["m2", "m3"]
    assert [m["offset"] for m in page["messages"]] == [2, 3]
    assert page["messages"][0]["key"] == "k"
    assert page["messages"][0]["headers"] == {"h": "2"}
    assert page["next_offset"] == 4

    rest = api.get(
        f"/api/topics/{unique}/partitions/1/messages", params={"offset": page["next_offset"]}
    ).json()
    assert [m["offset"] for m in rest["messages"]] == [4, 5]
    assert rest["messages"][1]["encoding"] == "base64"
    assert base64.b64decode(rest["messages"][1]["value"]) == binary
    assert rest["next_offset"] == 6

    at_end = api.get(
        f"/api/topics/{unique}/partitions/1/messages", params={"offset": 6, "wait_ms": 50}
    ).json()
    assert at_end == {"messages": [], "next_offset": 6}

    detail = api.get(f"/api/topics/{unique}").json()
    by_partition = {p["partition"]: p for p in detail["partitions"]}
    assert by_partition[1]["high_watermark"] == 6
    assert by_partition[1]["bytes"] > 0
    assert by_partition[0]["high_watermark"] == 0
    assert detail["messages"] == 6


def test_keyed_records_land_on_one_partition(api: httpx.Client, unique: str) -> None:
    assert api.post("/api/topics", json={"name": unique, "partitions": 4}).status_code == 201
    partitions = {
        api.post(f"/api/topics/{unique}/messages", json={"value": "v", "key": "same"}).json()[
            "partition"
        ]
        for _ in range(5)
    }
    assert len(partitions) == 1


def test_topic_errors_are_json(api: httpx.Client, unique: str) -> None:
    assert api.post("/api/topics", json={"name": unique}).status_code == 201
    duplicate = api.post("/api/topics", json={"name": unique})
    assert duplicate.status_code == 409
    assert "already exists" in duplicate.json()["error"]

    bad_name = api.post("/api/topics", json={"name": "no spaces allowed"})
    assert bad_name.status_code == 400
    assert isinstance(bad_name.json()["error"], str)

    wrong_type = api.post("/api/topics", json={"name": unique + "x", "partitions": "two"})
    assert wrong_type.status_code == 400
    assert "partitions" in wrong_type.json()["error"]

    unknown_field = api.post("/api/topics", json={"name": unique + "y", "replicas": 3})
    assert unknown_field.status_code == 400

    not_json = api.post(
        "/api/topics", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert not_json.status_code == 400
    assert "JSON" in not_json.json()["error"]

    no_partition = api.get(f"/api/topics/{unique}/partitions/7/messages")
    assert no_partition.status_code == 404
    past_end = api.get(f"/api/topics/{unique}/partitions/0/messages", params={"offset": 99})
    assert past_end.status_code == 400
    bad_limit = api.get(f"/api/topics/{unique}/partitions/0/messages", params={"limit": "x"})
    assert bad_limit.status_code == 400
    unknown_route = api.get("/api/nothing-here")
    assert unknown_route.status_code == 404
    assert "error" in unknown_route.json()


def test_delete_removes_committed_offsets(api: httpx.Client, unique: str) -> None:
    """Deleting a topic over HTTP drops every group's committed offsets for it, as Kafka's
    DeleteTopics does: a topic created again under the same name starts with no offsets."""
    topic, group = f"{unique}-t", f"{unique}-g"
    assert api.post("/api/topics", json={"name": topic, "partitions": 1}).status_code == 201
    for i in range(3):
        sent = api.post(f"/api/topics/{topic}/messages", json={"value": f"v{i}"})
        assert sent.status_code == 201, sent.text
    reset = api.post(
        f"/api/groups/{group}/reset-offsets",
        json={"to": "latest", "topic": topic, "execute": True},
    )
    assert reset.json()["executed"] is True
    assert api.get(f"/api/groups/{group}").json()["offsets"][0]["committed"] == 3

    assert api.delete(f"/api/topics/{topic}").status_code == 204
    assert api.post("/api/topics", json={"name": topic, "partitions": 1}).status_code == 201
    described = api.get(f"/api/groups/{group}")
    assert described.status_code in (200, 404), described.text
    if described.status_code == 200:
        assert described.json()["offsets"] == []
