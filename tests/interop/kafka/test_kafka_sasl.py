"""SASL PLAIN on the Kafka listener (``server.kafka_sasl_plain``), with real clients."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from kafka import KafkaConsumer, KafkaProducer
from kafka import TopicPartition as KpTopicPartition

from helpers.broker_process import WharfProcess

pytestmark = pytest.mark.interop

SASL = {"WHARF_KAFKA_SASL_PLAIN": "true"}


def sasl_conf(server: WharfProcess, user: str, password: str) -> dict[str, object]:
    return {
        "bootstrap.servers": server.kafka_bootstrap,
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": user,
        "sasl.password": password,
    }


@pytest.fixture
def server(start_wharf: Callable[..., WharfProcess]) -> WharfProcess:
    return start_wharf(env=SASL)


def test_confluent_clients_authenticate_and_work(server: WharfProcess) -> None:
    producer = Producer({**sasl_conf(server, "guest", "guest"), "linger.ms": 5})
    for i in range(5):
        producer.produce("secured", value=b"m%d" % i, partition=0)
    assert producer.flush(30) == 0
    consumer = Consumer({**sasl_conf(server, "guest", "guest"), "group.id": "g-secured",
                         "auto.offset.reset": "earliest"})
    try:
        consumer.assign([TopicPartition("secured", 0, 0)])
        got = []
        while len(got) < 5:
            msg = consumer.poll(10)
            assert msg is not None and msg.error() is None
            got.append(msg.value())
        assert got == [b"m%d" % i for i in range(5)]
    finally:
        consumer.close()


def test_kafka_python_authenticates(server: WharfProcess) -> None:
    producer = KafkaProducer(
        bootstrap_servers=server.kafka_bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_plain_username="guest",
        sasl_plain_password="guest",
    )
    try:
        producer.send("secured-kp", b"hello", partition=0).get(timeout=30)
    finally:
        producer.close()
    consumer = KafkaConsumer(
        bootstrap_servers=server.kafka_bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_plain_username="guest",
        sasl_plain_password="guest",
        enable_auto_commit=False,
    )
    try:
        consumer.assign([KpTopicPartition("secured-kp", 0)])
        consumer.seek(KpTopicPartition("secured-kp", 0), 0)
        polled = consumer.poll(timeout_ms=10_000)
        assert [r.value for batch in polled.values() for r in batch] == [b"hello"]
    finally:
        consumer.close()


def test_wrong_password_is_refused_with_an_authentication_error(server: WharfProcess) -> None:
    errors: list[KafkaError] = []
    producer = Producer({**sasl_conf(server, "guest", "wrong"), "error_cb": errors.append})
    deadline = time.monotonic() + 15
    while not errors and time.monotonic() < deadline:
        producer.poll(0.2)  # serves the error callback
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    assert "Authentication failed: invalid username or password" in " ".join(
        e.str() for e in errors
    )
    server.wait_for_log(r"SASL authentication failed for user 'guest'")


def test_unauthenticated_requests_are_refused(server: WharfProcess) -> None:
    admin = AdminClient({"bootstrap.servers": server.kafka_bootstrap})
    with pytest.raises(KafkaException):
        admin.list_topics(timeout=3)
    server.wait_for_log(r"API key 3 before SASL authentication")
    # A client that does authenticate is served meanwhile.
    good = AdminClient(sasl_conf(server, "guest", "guest"))
    assert good.list_topics(timeout=10).brokers


def test_sasl_is_refused_where_it_is_not_enabled(
    start_wharf: Callable[..., WharfProcess],
) -> None:
    server = start_wharf()
    errors: list[KafkaError] = []
    producer = Producer({**sasl_conf(server, "guest", "guest"), "error_cb": errors.append})
    deadline = time.monotonic() + 15
    while not errors and time.monotonic() < deadline:
        producer.poll(0.2)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    plain = AdminClient({"bootstrap.servers": server.kafka_bootstrap})
    assert plain.list_topics(timeout=10).brokers
