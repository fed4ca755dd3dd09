"""Kafka-protocol load with confluent-kafka, for the cluster benchmarks: produce, consume, latency.

- :func:`produce`: an idempotent acks=all producer sends as fast as it can for a while, many
  messages in flight (``linger.ms`` 5); the rate is acknowledged messages (delivery callbacks
  without error) over the time from the first send to the last acknowledgement.
- :func:`consume`: one consumer reads what :func:`produce` wrote from offset 0; the rate is
  messages over the time from the first to the last message received.
- :func:`latency`: a producer thread sends at a fixed rate (``linger.ms`` 0, acks=all) payloads
  that carry their send time; the consumer ``poll()``s each message as soon as librdkafka has it
  and records receive time minus send time. The first second is dropped (warm-up).

Each returns a plain dict of figures; topics are created with one partition and left behind
(the servers are thrown away after the run).
"""

from __future__ import annotations

import struct
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def create_topic(bootstrap: str, topic: str, partitions: int = 1) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, partitions, 1)])[topic].result(30)


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def produce(bootstrap: str, topic: str, size: int, seconds: float) -> dict[str, float]:
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": 5,
            "queue.buffering.max.messages": 200_000,
            "batch.num.messages": 10_000,
        }
    )
    payload = b"x" * size
    acked = failed = 0
    last_ack = 0.0

    def delivered(err: KafkaError | None, _msg: Message) -> None:
        nonlocal acked, failed, last_ack
        if err is None:
            acked += 1
            last_ack = time.perf_counter()
        else:
            failed += 1

    start = time.perf_counter()
    stop_at = start + seconds
    sent = 0
    while time.perf_counter() < stop_at:
        for _ in range(1000):
            try:
                producer.produce(topic, payload, on_delivery=delivered)
                sent += 1
            except BufferError:
                producer.poll(0.005)
        producer.poll(0)
    producer.flush(60)
    took = max(last_ack - start, 1e-9)
    return {
        "msgs_per_s": acked / took,
        "mb_per_s": acked * size / took / 1e6,
        "acked": acked,
        "failed": failed,
    }


def consume(bootstrap: str, topic: str, count: int, timeout_s: float = 120.0) -> dict[str, float]:
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.max.bytes": 50 * 1024 * 1024,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    received = 0
    first = last = 0.0
    deadline = time.monotonic() + timeout_s
    try:
        while received < count and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=10_000, timeout=0.5):
                if message.error() is None:
                    if received == 0:
                        first = time.perf_counter()
                    received += 1
            last = time.perf_counter()
    finally:
        consumer.close()
    return {"msgs_per_s": received / max(last - first, 1e-9), "received": received}


def latency(
    bootstrap: str, topic: str, size: int, seconds: float, rate: float = 1000.0
) -> dict[str, float]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": topic, "fetch.wait.max.ms": 100}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    consumer.poll(0.5)
    producer = Producer(
        {"bootstrap.servers": bootstrap, "linger.ms": 0, "acks": "all", "enable.idempotence": True}
    )
    padding = b"\0" * max(0, size - 8)
    total = int(rate * seconds)

    def send() -> None:
        start = time.perf_counter()
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            producer.produce(topic, struct.pack(">d", time.time()) + padding)
            producer.poll(0)
        producer.flush(30)

    sender = threading.Thread(target=send)
    sender.start()
    samples: list[tuple[float, float]] = []  # (send time, latency s)
    deadline = time.monotonic() + seconds + 30
    while len(samples) < total and time.monotonic() < deadline:
        message = consumer.poll(0.2)
        if message is None or message.error() is not None:
            continue
        now = time.time()
        (sent_at,) = struct.unpack(">d", (message.value() or b"")[:8])
        samples.append((sent_at, now - sent_at))
    sender.join()
    consumer.close()
    if not samples:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "samples": 0}
    warm = samples[0][0] + 1.0
    kept = sorted(lat for sent_at, lat in samples if sent_at >= warm) or [samples[-1][1]]
    return {
        "p50_ms": percentile(kept, 0.50) * 1000,
        "p99_ms": percentile(kept, 0.99) * 1000,
        "max_ms": kept[-1] * 1000,
        "samples": len(kept),
        "lost": total - len(samples),
    }
