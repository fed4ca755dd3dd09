"""/metrics parsed with prometheus_client's parser: the families exist, carry the right labels,
and move when messages flow."""

from __future__ import annotations

import httpx
import pika
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from helpers.broker_process import WharfProcess


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


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _fsync_counts(samples: Samples) -> dict[str, float]:
    """``wharf_fsync_seconds_count`` by kind, checked against the histogram's +Inf bucket."""
    counts: dict[str, float] = {}
    for (name, labels), sample in samples.items():
        if name == "wharf_fsync_seconds_count":
            kind = dict(labels)["kind"]
            inf = samples[("wharf_fsync_seconds_bucket", (("kind", kind), ("le", "+Inf")))]
            assert inf == sample
            assert samples[("wharf_fsync_seconds_sum", labels)] >= 0
            counts[kind] = sample
    return counts


def test_fsync_histogram_counts_the_flushes_of_acknowledged_writes(
    api: httpx.Client, http_server: WharfProcess, unique: str
) -> None:
    topic, queue = f"{unique}-t", f"{unique}-q"
    api.post("/api/topics", json={"name": topic, "partitions": 1})
    before = _fsync_counts(_samples(api))

    producer = KafkaProducer(bootstrap_servers=http_server.kafka_bootstrap, acks="all")
    try:
        for i in range(5):  # one at a time: each acks=all produce waits for its own fsync
            producer.send(topic, value=b"%d" % i, partition=0).get(timeout=30)
    finally:
        producer.close()
    after_produce = _fsync_counts(_samples(api))
    assert after_produce.get("partition", 0) >= before.get("partition", 0) + 5

    connection = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", http_server.amqp_port)
    )
    try:
        channel = connection.channel()
        channel.queue_declare(queue, durable=True)
        channel.confirm_delivery()
        for i in range(5):  # confirmed persistent messages: fsynced before each confirm
            channel.basic_publish(
                "", queue, b"%d" % i, pika.BasicProperties(delivery_mode=2), mandatory=True
            )
    finally:
        connection.close()
    after_publish = _fsync_counts(_samples(api))
    assert sum(after_publish.values()) >= sum(after_produce.values()) + 5
