"""KafkaAdapter flow control and ordering, driven through an in-memory transport.

The broker is real (embedded, on a temporary directory); only the socket is replaced by
:mod:`wharf.testing.transports`, which records what the connection does to it.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from kafka.protocol.admin import CreateTopicsRequest, CreateTopicsResponse
from kafka.protocol.consumer import FetchRequest
from kafka.protocol.metadata import ApiVersionsRequest

from wharf.core.broker import Broker
from wharf.errors import StorageError
from wharf.protocol.kafka.context import KafkaContext
from wharf.server.kafka.adapter import KafkaAdapter
from wharf.testing.transports import MemoryTransport, connect


def correlation_ids(transport: MemoryTransport) -> list[int]:
    return [struct.unpack_from(">i", frame, 4)[0] for frame in transport.written]


def encoded(request: Any, correlation_id: int) -> bytes:
    request.with_header(correlation_id=correlation_id, client_id="conn-test")
    return bytes(request.encode(header=True, framed=True))


def long_poll(correlation_id: int, topic: str) -> bytes:
    request = FetchRequest(
        replica_id=-1,
        max_wait_ms=10_000,
        min_bytes=1,
        max_bytes=1 << 20,
        isolation_level=0,
        session_id=0,
        session_epoch=-1,
        topics=[
            FetchRequest.FetchTopic(
                topic=topic,
                partitions=[
                    FetchRequest.FetchTopic.FetchPartition(
                        partition=0,
                        current_leader_epoch=-1,
                        fetch_offset=0,
                        log_start_offset=-1,
                        partition_max_bytes=1 << 20,
                    )
                ],
            )
        ],
        forgotten_topics_data=[],
        rack_id="",
        version=11,
    )
    return encoded(request, correlation_id)


def api_versions(correlation_id: int) -> bytes:
    request = ApiVersionsRequest(client_software_name="t", client_software_version="1", version=3)
    return encoded(request, correlation_id)


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    async with Broker.open(tmp_path / "data") as opened:
        await opened.topics.create("events", 1)
        yield opened


async def test_reading_pauses_at_the_in_flight_limit_and_answers_keep_request_order(
    broker: Broker,
) -> None:
    ctx = KafkaContext(broker=broker, advertised_host="127.0.0.1", advertised_port=9092)
    connection = KafkaAdapter(ctx, set(), max_frame_bytes=1 << 20, max_in_flight=3)
    transport = connect(connection)

    # Two long polls on an empty partition, then a quick request: three in flight.
    connection.data_received(long_poll(1, "events") + long_poll(2, "events") + api_versions(3))
    await asyncio.sleep(0.05)
    assert transport.paused
    assert transport.written == []  # ApiVersions is done but must wait behind the fetches

    await broker.produce("events", b"wake up", partition=0)
    await transport.wait_until(lambda: len(transport.written) == 3)
    assert correlation_ids(transport) == [1, 2, 3]
    assert not transport.paused
    transport.disconnect()


async def test_a_full_write_buffer_pauses_reading(broker: Broker) -> None:
    ctx = KafkaContext(broker=broker, advertised_host="127.0.0.1", advertised_port=9092)
    connection = KafkaAdapter(ctx, set(), max_frame_bytes=1 << 20)
    transport = connect(connection)
    connection.pause_writing()
    assert transport.paused
    connection.resume_writing()
    assert not transport.paused
    connection.data_received(api_versions(9))
    await transport.wait_until(lambda: len(transport.written) == 1)
    assert correlation_ids(transport) == [9]
    transport.disconnect()


async def test_garbage_closes_the_transport(broker: Broker) -> None:
    ctx = KafkaContext(broker=broker, advertised_host="127.0.0.1", advertised_port=9092)
    connection = KafkaAdapter(ctx, set(), max_frame_bytes=1 << 20)
    transport = connect(connection)
    connection.data_received(struct.pack(">i", 1 << 30))
    assert transport.closed
    assert transport.written == []


async def test_reading_pauses_at_the_in_flight_byte_limit(broker: Broker) -> None:
    ctx = KafkaContext(broker=broker, advertised_host="127.0.0.1", advertised_port=9092)
    one = long_poll(1, "events")
    connection = KafkaAdapter(
        ctx, set(), max_frame_bytes=1 << 20, max_in_flight_bytes=2 * (len(one) - 4)
    )
    transport = connect(connection)
    connection.data_received(one)
    await asyncio.sleep(0.02)
    assert not transport.paused
    connection.data_received(long_poll(2, "events"))
    await asyncio.sleep(0.02)
    assert transport.paused
    await broker.produce("events", b"wake up", partition=0)
    await transport.wait_until(lambda: len(transport.written) == 2)
    assert not transport.paused
    transport.disconnect()


async def test_requests_are_timed_and_counted_with_the_client_id(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wharf.connections")
    ctx = KafkaContext(broker=broker, advertised_host="127.0.0.1", advertised_port=9092)
    connection = KafkaAdapter(ctx, set(), max_frame_bytes=1 << 20)
    transport = connect(connection)
    assert connection.client_id == ""
    assert (connection.requests, connection.bytes_in, connection.bytes_out) == (0, 0, 0)
    sent = api_versions(1) + api_versions(2)
    connection.data_received(sent)
    await transport.wait_until(lambda: len(transport.written) == 2)
    assert connection.client_id == "conn-test"
    assert connection.requests == 2
    assert connection.bytes_in == len(sent)
    assert connection.bytes_out == sum(map(len, transport.written))
    [(key, timings)] = broker.stats.requests.items()  # recorded into the broker's stats
    assert (key, timings.count) == (("kafka", "ApiVersions"), 2)
    assert sum(timings.counts) == 2
    assert connection.id.startswith("kafka-")
    transport.disconnect()
    closed = [r for r in caplog.records if "closed" in r.getMessage()]
    assert [r.levelno for r in closed] == [logging.INFO]
    fields = closed[0].wharf_fields
    assert f"kafka-{fields['conn']}" == connection.id
    assert fields["client_id"] == "conn-test"
    assert (fields["requests"], fields["bytes_in"]) == (2, len(sent))


async def test_a_bad_frame_logs_a_warning_with_the_reason(
    broker: Broker, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wharf.connections")
    ctx = KafkaContext(broker=broker, advertised_host="127.0.0.1", advertised_port=9092)
    connection = KafkaAdapter(ctx, set(), max_frame_bytes=1 << 20)
    transport = connect(connection)
    connection.data_received(struct.pack(">i", -1))
    await transport.wait_until(lambda: transport.lost)  # not logged a second time
    records = [r for r in caplog.records if r.name == "wharf.connections"]
    assert [r.levelno for r in records] == [logging.INFO, logging.WARNING]
    reason = records[1].wharf_fields["reason"]
    assert reason.startswith("protocol error: InvalidFrameLengthError"), reason


def create_topic(correlation_id: int, name: str) -> bytes:
    request = CreateTopicsRequest(
        topics=[
            CreateTopicsRequest.CreatableTopic(
                name=name, num_partitions=1, replication_factor=1, assignments=[], configs=[]
            )
        ],
        timeout_ms=1000,
        validate_only=False,
        version=4,
    )
    return encoded(request, correlation_id)


async def test_a_wharf_error_in_a_handler_is_that_entry_s_error_code(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def disk_failed(*args: Any, **kwargs: Any) -> None:
        raise StorageError("no space left on device")

    monkeypatch.setattr(broker.topics, "create", disk_failed)
    ctx = KafkaContext(broker=broker, advertised_host="127.0.0.1", advertised_port=9092)
    connection = KafkaAdapter(ctx, set(), max_frame_bytes=1 << 20)
    transport = connect(connection)
    connection.data_received(create_topic(5, "new-topic"))
    await transport.wait_until(lambda: transport.written)
    response = CreateTopicsResponse[4].decode(transport.written[0][8:])
    [(name, code, message)] = [(t[0], t[1], t[2]) for t in response.topics]
    assert (name, code) == ("new-topic", 56)  # KAFKA_STORAGE_ERROR
    assert "no space" in message
    assert not transport.closed
    transport.disconnect()


async def test_a_bug_in_a_handler_is_logged_with_its_traceback_and_closes_the_connection(
    broker: Broker, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def bug(*args: Any, **kwargs: Any) -> None:
        raise KeyError("a bug, not a refusal")

    monkeypatch.setattr(broker.topics, "create", bug)
    caplog.set_level(logging.INFO)
    ctx = KafkaContext(broker=broker, advertised_host="127.0.0.1", advertised_port=9092)
    connection = KafkaAdapter(ctx, set(), max_frame_bytes=1 << 20)
    transport = connect(connection)
    connection.data_received(create_topic(6, "new-topic"))
    await transport.wait_until(lambda: transport.closed)
    assert transport.written == []  # no UNKNOWN_SERVER_ERROR answer hides the bug
    [failure] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert failure.exc_info is not None and failure.exc_info[0] is KeyError
    closed = [r for r in caplog.records if r.name == "wharf.connections"][-1]
    assert closed.wharf_fields["reason"].startswith("internal error serving CreateTopics")
