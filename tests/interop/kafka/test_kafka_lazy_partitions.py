"""Partition logs opened lazily, seen through confluent-kafka: a new partition makes no
directory until its first record, a graceful restart opens no log until a client needs its
records, and what was acknowledged is all there, after a clean stop and after a kill -9
(whose recovery of the logs runs behind the open listeners)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def produce(bootstrap: str, partition: int, values: list[bytes]) -> list[int]:
    acked: list[int] = []

    def delivered(err, msg) -> None:  # noqa: ANN001
        assert err is None, err
        acked.append(msg.offset())

    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True}
    )
    for value in values:
        producer.produce("lazy", value=value, partition=partition, on_delivery=delivered)
    assert producer.flush(30) == 0
    return acked


def read(bootstrap: str, partition: int, count: int) -> list[bytes]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "reader", "enable.auto.commit": False}
    )
    values: list[bytes] = []
    try:
        consumer.assign([TopicPartition("lazy", partition, 0)])
        while len(values) < count:
            msg = consumer.poll(30)
            assert msg is not None and msg.error() is None, msg and msg.error()
            values.append(msg.value())
    finally:
        consumer.close()
    return values


def watermarks(bootstrap: str, partition: int) -> tuple[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "marks"})
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition("lazy", partition), timeout=30)
    finally:
        consumer.close()
    return low, high


def test_partitions_open_when_needed_and_keep_every_acked_record(
    start_wharf, tmp_path: Path  # noqa: ANN001
) -> None:
    data = tmp_path / "data"
    server = start_wharf(data_dir=data)
    admin = AdminClient({"bootstrap.servers": server.kafka_bootstrap})
    admin.create_topics([NewTopic("lazy", 3)])["lazy"].result(30)
    assert sorted(p.name for p in (data / "topics").iterdir()) == []
    first = [b"one-%d" % i for i in range(10)]
    assert produce(server.kafka_bootstrap, 1, first) == list(range(10))
    assert sorted(p.name for p in (data / "topics").iterdir()) == ["lazy-1"]

    server.restart()  # graceful: the next start opens no log
    assert not (data / "topic-summaries.json").exists()  # read and deleted at start
    assert watermarks(server.kafka_bootstrap, 1) == (0, 10)
    assert watermarks(server.kafka_bootstrap, 0) == (0, 0)
    assert read(server.kafka_bootstrap, 1, 10) == first
    second = [b"two-%d" % i for i in range(5)]
    assert produce(server.kafka_bootstrap, 1, second) == list(range(10, 15))
    assert produce(server.kafka_bootstrap, 2, [b"three"]) == [0]

    server.kill()  # a crash: no summaries, every log with a directory to recover
    server.restart()  # (in the background after the listeners open, or at first use)
    assert watermarks(server.kafka_bootstrap, 2) == (0, 1)
    assert read(server.kafka_bootstrap, 1, 15) == first + second
    assert read(server.kafka_bootstrap, 2, 1) == [b"three"]
    assert watermarks(server.kafka_bootstrap, 0) == (0, 0)
    assert produce(server.kafka_bootstrap, 1, [b"four"]) == [15]
    deadline = time.monotonic() + 30
    while "recovered the logs of 2 partitions left by a crash" not in server.log_text():
        assert time.monotonic() < deadline, "no log line of the partitions recovered"
        time.sleep(0.05)
