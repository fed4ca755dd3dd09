"""End-to-end latency of a Kafka-protocol broker with a consumer that polls one message at a time.

A consumer that reads in batches, e.g. ``consume(num_messages=1000, timeout=0.05)`` (as the
client kit the first peer benchmarks drove did), holds each message in the client until a
batch of 1000 fills or 50 ms pass, so its figures measure that wait more than the broker. This
script measures the broker: a producer thread sends at a fixed rate (``linger.ms`` 0, acks=all)
a payload carrying its send time, and the consumer ``poll()``s each message as soon as
librdkafka has it (as :func:`kafka_load.latency` does for ``kafka_peers.py`` and ``cluster.py``).

    python benchmarks/kafka_latency.py --bootstrap 127.0.0.1:9092 --rate 1000 --seconds 10

Prints one ``RESULT {json}`` line (p50/p90/p99/p99.9/max in ms).
"""

from __future__ import annotations

import argparse
import json
import struct
import threading
import time
import uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--bootstrap", default="127.0.0.1:9092")
    p.add_argument("--rate", type=float, default=1000.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=1.0)
    p.add_argument("--size", type=int, default=100)
    args = p.parse_args()

    topic = f"lat-{uuid.uuid4().hex[:8]}"
    admin = AdminClient({"bootstrap.servers": args.bootstrap})
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result(30)
    consumer = Consumer(
        {"bootstrap.servers": args.bootstrap, "group.id": topic, "fetch.wait.max.ms": 100}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    consumer.poll(0.5)
    producer = Producer({"bootstrap.servers": args.bootstrap, "linger.ms": 0, "acks": "all"})
    padding = b"\0" * max(0, args.size - 8)
    total = int(args.rate * args.seconds)

    def produce() -> None:
        start = time.perf_counter()
        for i in range(total):
            due = start + i / args.rate
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            producer.produce(topic, struct.pack(">d", time.time()) + padding, partition=0)
            producer.poll(0)
        producer.flush(30)

    thread = threading.Thread(target=produce)
    thread.start()
    samples: list[tuple[float, float]] = []
    deadline = time.time() + args.seconds + 30
    while len(samples) < total and time.time() < deadline:
        msg = consumer.poll(0.1)
        if msg is None or msg.error():
            continue
        (sent,) = struct.unpack_from(">d", msg.value())
        samples.append((sent, (time.time() - sent) * 1000))
    thread.join()
    consumer.close()
    admin.delete_topics([topic])
    first = samples[0][0] if samples else 0.0
    latencies = sorted(ms for sent, ms in samples if sent - first >= args.warmup)
    result = {
        "test": "latency-poll",
        "rate": args.rate,
        "sent": total,
        "received": len(samples),
        "p50_ms": round(percentile(latencies, 0.50), 3),
        "p90_ms": round(percentile(latencies, 0.90), 3),
        "p99_ms": round(percentile(latencies, 0.99), 3),
        "p999_ms": round(percentile(latencies, 0.999), 3),
        "max_ms": round(latencies[-1], 3),
    }
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
