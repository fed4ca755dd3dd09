"""kill -9 durability: every record acknowledged with acks=all, and every committed group
offset, survives a SIGKILL of the server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def test_acked_records_survive_sigkill(start_wharf, tmp_path: Path) -> None:  # noqa: ANN001
    server = start_wharf(data_dir=tmp_path / "data")
    bootstrap = server.kafka_bootstrap
    acked: dict[int, bytes] = {}

    def delivered(err, msg) -> None:  # noqa: ANN001
        if err is None:
            acked[msg.offset()] = msg.value()

    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 1,
            "message.timeout.ms": 5000,
            "reconnect.backoff.max.ms": 200,
        }
    )
    deadline = time.monotonic() + 2.0
    i = 0
    while time.monotonic() < deadline:
        producer.produce("durable", value=b"record-%d" % i, partition=0, on_delivery=delivered)
        producer.poll(0)
        i += 1
        if i % 500 == 0:
            producer.flush(10)
    producer.flush(10)
    # A committed group offset is acknowledged after its fsync too.
    committer = Consumer({"bootstrap.servers": bootstrap, "group.id": "durable-group"})
    try:
        committer.commit(offsets=[TopicPartition("durable", 0, 123)], asynchronous=False)
    finally:
        committer.close()
    # Keep producing while the server dies: some of these are acked, some are lost in flight.
    for j in range(i, i + 2000):
        producer.produce("durable", value=b"record-%d" % j, partition=0, on_delivery=delivered)
    producer.poll(0.05)
    server.kill()
    producer.flush(8)
    assert len(acked) >= 500

    server.restart()
    consumer = Consumer(
        {
            "bootstrap.servers": server.kafka_bootstrap,
            "group.id": "durability-check",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.assign([TopicPartition("durable", 0, 0)])
        stored: dict[int, bytes] = {}
        last = max(acked)
        end = time.monotonic() + 60
        while last not in stored and time.monotonic() < end:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                stored[msg.offset()] = msg.value()
    finally:
        consumer.close()
    resumed = Consumer({"bootstrap.servers": server.kafka_bootstrap, "group.id": "durable-group"})
    try:
        [committed] = resumed.committed([TopicPartition("durable", 0)], timeout=30)
    finally:
        resumed.close()
    assert committed.offset == 123
    missing = [offset for offset in acked if stored.get(offset) != acked[offset]]
    assert missing == []
    assert sorted(stored) == list(range(len(stored)))  # offsets unchanged, no gaps
