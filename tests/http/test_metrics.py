"""/metrics parsed with prometheus_client's parser: the families exist, carry the right labels,
and move when messages flow."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families


def _samples(api: httpx.Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    response = api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    result = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            result[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return result


def test_metrics_move_when_messages_flow(api: httpx.Client, unique: str) -> None:
    topic, queue = f"{unique}-t", f"{unique}-q"
    api.post("/api/topics", json={"name": topic, "partitions": 2})
    api.put(f"/api/queues/{queue}", json={})
    part = (("partition", "1"), ("topic", topic))
    q = (("queue", queue), ("vhost", "/"))

    before = _samples(api)
    assert before[("wharf_partition_messages_in_total", part)] == 0
    assert before[("wharf_queue_messages_ready", q)] == 0
    assert ("wharf_storage_bytes", ()) in before
    assert before[("wharf_build_info", (("version", "0.1.0"),))] == 1

    for i in range(3):
        api.post(f"/api/topics/{topic}/messages", json={"value": str(i), "partition": 1})
    for i in range(5):
        api.post(f"/api/queues/{queue}/messages", json={"value": str(i)})
    api.post(f"/api/queues/{queue}/get", json={"count": 2, "ack": True})
    api.post(
        f"/api/groups/{unique}-g/reset-offsets",
        json={"to": "offset", "offset": 1, "topic": topic, "partitions": [1], "execute": True},
    )

    after = _samples(api)
    assert after[("wharf_partition_messages_in_total", part)] == 3
    assert after[("wharf_partition_messages", part)] == 3
    assert after[("wharf_partition_size_bytes", part)] > 0
    assert after[("wharf_partition_bytes_in_total", part)] > 0
    assert after[("wharf_queue_messages_published_total", q)] == 5
    assert after[("wharf_queue_messages_delivered_total", q)] == 2
    assert after[("wharf_queue_messages_ready", q)] == 3
    assert after[("wharf_queue_message_bytes", q)] == 3
    lag_key = (("group", f"{unique}-g"), ("partition", "1"), ("topic", topic))
    assert after[("wharf_consumer_group_lag", lag_key)] == 2
    assert after[("wharf_storage_bytes", ())] > before[("wharf_storage_bytes", ())]
    assert after[("wharf_fsyncs_total", ())] > before[("wharf_fsyncs_total", ())]

    route = (("route", "POST /api/topics/{name}/messages"),)
    count = after[("wharf_http_request_duration_seconds_count", route)]
    assert count >= 3
    inf = after[("wharf_http_request_duration_seconds_bucket", (("le", "+Inf"), *route))]
    assert inf == count
