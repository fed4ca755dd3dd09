"""Idempotent producers: a retried batch is not written twice and gets its original offset.

The retry is sent byte for byte over a raw socket (as a producer does after a lost response):
InitProducerId, Produce with sequence 0, the same Produce again, then the next sequence.
Requests are encoded with kafka-python's protocol classes.
"""

from __future__ import annotations

import socket
import struct

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from kafka.protocol.producer import (
    InitProducerIdRequest,
    InitProducerIdResponse,
    ProduceRequest,
    ProduceResponse,
)
from kafka.record.memory_records import MemoryRecordsBuilder

from helpers.broker_process import WharfProcess

pytestmark = pytest.mark.interop

PRODUCE_VERSION = 9


class RawClient:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        self.correlation_id = 0

    def call(self, request: object, response_type: type, version: int) -> object:
        self.correlation_id += 1
        request.with_header(correlation_id=self.correlation_id, client_id="raw")  # type: ignore[attr-defined]
        self.sock.sendall(bytes(request.encode(header=True, framed=True)))  # type: ignore[attr-defined]
        (size,) = struct.unpack(">i", self._read(4))
        frame = self._read(size)
        return response_type.decode(frame, version=version, header=True)  # type: ignore[attr-defined]

    def _read(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "connection closed"
            data += chunk
        return data

    def close(self) -> None:
        self.sock.close()


def batch(producer_id: int, epoch: int, sequence: int, values: list[bytes]) -> bytes:
    builder = MemoryRecordsBuilder(
        magic=2,
        compression_type=0,
        batch_size=1 << 20,
        producer_id=producer_id,
        producer_epoch=epoch,
        base_sequence=sequence,
    )
    for value in values:
        builder.append(timestamp=1_700_000_000_000, key=None, value=value)
    builder.close()
    return bytes(builder.buffer())


def produce(client: RawClient, topic: str, records: bytes) -> tuple[int, int]:
    data = ProduceRequest.TopicProduceData(
        name=topic,
        partition_data=[
            ProduceRequest.TopicProduceData.PartitionProduceData(index=0, records=records)
        ],
    )
    request = ProduceRequest(
        transactional_id=None,
        acks=-1,
        timeout_ms=10_000,
        topic_data=[data],
        version=PRODUCE_VERSION,
    )
    response = client.call(request, ProduceResponse, PRODUCE_VERSION)
    [part] = response.responses[0].partition_responses  # type: ignore[attr-defined]
    return part.error_code, part.base_offset


def test_retried_batch_gets_original_offset_and_is_stored_once(
    kafka_server: WharfProcess, topic_name: str
) -> None:
    assert kafka_server.kafka_port is not None
    client = RawClient(kafka_server.kafka_port)
    try:
        init = client.call(
            InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000, version=4),
            InitProducerIdResponse,
            4,
        )
        assert init.error_code == 0  # type: ignore[attr-defined]
        pid, epoch = init.producer_id, init.producer_epoch  # type: ignore[attr-defined]
        assert pid >= 0

        first = batch(pid, epoch, 0, [b"a", b"b", b"c"])
        assert produce(client, topic_name, first) == (0, 0)
        assert produce(client, topic_name, first) == (0, 0)  # the retry: same offset, not stored
        assert produce(client, topic_name, batch(pid, epoch, 3, [b"d"])) == (0, 3)
        # A gap in the sequence is refused.
        error, _ = produce(client, topic_name, batch(pid, epoch, 9, [b"x"]))
        assert error == 45  # OUT_OF_ORDER_SEQUENCE_NUMBER
    finally:
        client.close()

    consumer = Consumer(
        {"bootstrap.servers": kafka_server.kafka_bootstrap, "group.id": "idem-check"}
    )
    try:
        consumer.assign([TopicPartition(topic_name, 0, 0)])
        values = []
        for _ in range(60):
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                values.append((msg.offset(), msg.value()))
            if len(values) == 4:
                break
        # Nothing after offset 3: the duplicate and the out-of-order batch were not stored.
        assert consumer.poll(1.0) is None
    finally:
        consumer.close()
    assert values == [(0, b"a"), (1, b"b"), (2, b"c"), (3, b"d")]


def test_idempotent_librdkafka_producer_delivers_each_message_once(
    kafka_server: WharfProcess, topic_name: str
) -> None:
    producer = Producer(
        {
            "bootstrap.servers": kafka_server.kafka_bootstrap,
            "enable.idempotence": True,
            "linger.ms": 2,
        }
    )
    for i in range(5000):
        producer.produce(topic_name, value=b"%d" % i, partition=0)
        if i % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0
    consumer = Consumer(
        {"bootstrap.servers": kafka_server.kafka_bootstrap, "group.id": "idem-check-2"}
    )
    try:
        consumer.assign([TopicPartition(topic_name, 0, 0)])
        values: list[bytes] = []
        while len(values) < 5000:
            msgs = consumer.consume(1000, 5.0)
            assert msgs, "no more messages before 5000 arrived"
            values.extend(m.value() for m in msgs if m.error() is None)
    finally:
        consumer.close()
    assert values == [b"%d" % i for i in range(5000)]


def test_init_producer_id_bumps_only_ids_issued_here(kafka_server: WharfProcess) -> None:
    """KIP-360 re-initialisation: a producer id this broker issued gets its next epoch; an id it
    never issued is refused with INVALID_PRODUCER_ID_MAPPING rather than adopted."""
    assert kafka_server.kafka_port is not None
    client = RawClient(kafka_server.kafka_port)
    try:
        first = client.call(
            InitProducerIdRequest(transactional_id=None, transaction_timeout_ms=60_000, version=4),
            InitProducerIdResponse,
            4,
        )
        assert first.error_code == 0  # type: ignore[attr-defined]
        pid, epoch = first.producer_id, first.producer_epoch  # type: ignore[attr-defined]

        again = client.call(
            InitProducerIdRequest(
                transactional_id=None,
                transaction_timeout_ms=60_000,
                producer_id=pid,
                producer_epoch=epoch,
                version=4,
            ),
            InitProducerIdResponse,
            4,
        )
        assert again.error_code == 0  # type: ignore[attr-defined]
        assert (again.producer_id, again.producer_epoch) == (pid, epoch + 1)  # type: ignore[attr-defined]

        stranger = client.call(
            InitProducerIdRequest(
                transactional_id=None,
                transaction_timeout_ms=60_000,
                producer_id=pid + 1_000_000,
                producer_epoch=0,
                version=4,
            ),
            InitProducerIdResponse,
            4,
        )
        assert stranger.error_code == 49  # type: ignore[attr-defined]  # INVALID_PRODUCER_ID_MAPPING
        assert stranger.producer_id == -1  # type: ignore[attr-defined]
    finally:
        client.close()
