"""The Kafka listener over a real loopback socket: pipelining, ordering, bad input, shutdown."""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from kafka.protocol.metadata import ApiVersionsRequest
from kafka.protocol.metadata import ApiVersionsResponse as KpApiVersionsResponse

from wharf.core.broker import Broker
from wharf.server.kafka.listener import (
    KafkaListener,
    default_advertised_host,
    start_kafka_listener,
)
from wharf.server.settings import ServerSettings
from wharf.testing.clock import VirtualClock


@pytest.fixture
async def listener(tmp_path: Path) -> AsyncIterator[KafkaListener]:
    async with Broker.open(tmp_path / "data") as broker:
        served = await start_kafka_listener(broker, "127.0.0.1", 0)
        try:
            yield served
        finally:
            await served.close(1.0)


def api_versions(correlation_id: int, version: int = 3) -> bytes:
    request = ApiVersionsRequest(
        client_software_name="wharf-test", client_software_version="1", version=version
    )
    request.with_header(correlation_id=correlation_id, client_id="listener-test")
    return bytes(request.encode(header=True, framed=True))


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (size,) = struct.unpack(">i", await reader.readexactly(4))
    return await reader.readexactly(size)


async def test_pipelined_requests_are_answered_in_order(listener: KafkaListener) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        writer.write(b"".join(api_versions(cid) for cid in (11, 12, 13)))
        await writer.drain()
        ids = []
        for _ in range(3):
            frame = await asyncio.wait_for(read_frame(reader), 10)
            (cid,) = struct.unpack_from(">i", frame)
            ids.append(cid)
            decoded = KpApiVersionsResponse.decode(frame, version=3, header=True)
            assert decoded.error_code == 0
        assert ids == [11, 12, 13]
    finally:
        writer.close()


async def test_unknown_api_versions_version_gets_v0_error_and_ranges(
    listener: KafkaListener,
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        body = struct.pack(">hhih", 18, 99, 5, 4) + b"test"
        writer.write(struct.pack(">i", len(body)) + body)
        frame = await asyncio.wait_for(read_frame(reader), 10)
        decoded = KpApiVersionsResponse.decode(frame, version=0, header=True)
        assert decoded.error_code == 35
        ranges = {k.api_key: (k.min_version, k.max_version) for k in decoded.api_keys}
        assert ranges[18] == (0, 4)
        # The connection stays usable: the client retries at a version it was told about.
        writer.write(api_versions(6))
        frame = await asyncio.wait_for(read_frame(reader), 10)
        assert struct.unpack_from(">i", frame) == (6,)
    finally:
        writer.close()


async def test_bad_frame_closes_that_connection_only(
    listener: KafkaListener, caplog: pytest.LogCaptureFixture
) -> None:
    # Pin the level: another test's library (Celery) may have raised the root logger's level.
    caplog.set_level(logging.WARNING, logger="wharf")
    # Logging set up by other tests in this process may have raised the "wharf" logger's level.
    caplog.set_level(logging.WARNING, logger="wharf")
    good_reader, good_writer = await asyncio.open_connection("127.0.0.1", listener.port)
    bad_reader, bad_writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        bad_writer.write(struct.pack(">i", -1))
        assert await asyncio.wait_for(bad_reader.read(), 10) == b""
        good_writer.write(api_versions(1))
        frame = await asyncio.wait_for(read_frame(good_reader), 10)
        assert struct.unpack_from(">i", frame) == (1,)
    finally:
        good_writer.close()
        bad_writer.close()
    assert "InvalidFrameLengthError" in caplog.text


async def test_close_waits_for_nothing_when_idle(tmp_path: Path) -> None:
    async with Broker.open(tmp_path / "data") as broker:
        served = await start_kafka_listener(broker, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        await served.close(5.0)
        assert await asyncio.wait_for(reader.read(), 10) == b""
        writer.close()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", served.port)


def test_wildcard_binds_advertise_the_host_name() -> None:
    assert default_advertised_host("127.0.0.1") == "127.0.0.1"
    assert default_advertised_host("0.0.0.0") == socket.gethostname()
    assert KafkaListener("::", 0).advertised_host == socket.gethostname()
    assert KafkaListener("::", 0, advertised_host="broker.example").advertised_host == (
        "broker.example"
    )


async def test_connections_closed_at_shutdown_say_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wharf.connections")
    async with Broker.open(tmp_path / "data") as broker:
        served = await start_kafka_listener(broker, "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", served.port)
        try:
            writer.write(api_versions(1))
            await asyncio.wait_for(read_frame(reader), 10)
            [connection] = served.connections
            [(key, timings)] = broker.stats.requests.items()
            assert (key, timings.count) == (("kafka", "ApiVersions"), 1)
            await served.close(5.0)
            assert await asyncio.wait_for(reader.read(), 10) == b""
        finally:
            writer.close()
    peer = f"127.0.0.1:{writer.get_extra_info('sockname')[1]}"
    records = [r for r in caplog.records if getattr(r, "wharf_fields", {}).get("peer") == peer]
    assert [r.levelno for r in records] == [logging.INFO, logging.WARNING]
    assert f"kafka-{records[0].wharf_fields['conn']}" == connection.id
    closed = records[1].wharf_fields
    assert closed["reason"] == "server shutting down"
    assert closed["client_id"] == "listener-test"
    assert closed["requests"] == 1


async def test_idle_connections_are_closed_and_busy_ones_kept(tmp_path: Path) -> None:
    clock = VirtualClock()  # the sweep and the idle times run on it: no waiting for real time
    async with Broker.open(tmp_path / "data", clock=clock) as broker:
        served = await start_kafka_listener(broker, "127.0.0.1", 0, max_idle_ms=400)
        try:
            idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", served.port)
            busy_reader, busy_writer = await asyncio.open_connection("127.0.0.1", served.port)
            for reader, writer in ((idle_reader, idle_writer), (busy_reader, busy_writer)):
                writer.write(api_versions(0))  # both accepted and active at virtual time 0
                await asyncio.wait_for(read_frame(reader), 10)
            # The busy client sends a request every 100 ms for 1.5 s, well past the limit.
            for cid in range(1, 16):
                await clock.run_for(100)
                if cid == 3:  # 300 ms: not idle for long enough yet
                    assert len(served.connections) == 2
                busy_writer.write(api_versions(cid))
                await asyncio.wait_for(read_frame(busy_reader), 10)
            # The idle one was closed by the server: end of stream, not a timeout.
            assert await asyncio.wait_for(idle_reader.read(1), 10) == b""
            assert len(served.connections) == 1
            idle_writer.close()
            busy_writer.close()
        finally:
            await served.close(1.0)


async def test_the_idle_sweep_stops_with_the_listener(tmp_path: Path) -> None:
    clock = VirtualClock()
    async with Broker.open(tmp_path / "data", clock=clock) as broker:
        pending = clock.pending()
        served = await start_kafka_listener(broker, "127.0.0.1", 0, max_idle_ms=400)
        assert clock.pending() == pending + 1
        await served.close(1.0)
        assert clock.pending() == pending


def test_idle_limit_comes_from_the_settings() -> None:
    settings = ServerSettings(kafka_connections_max_idle_ms=1234)
    assert KafkaListener.from_settings(settings).max_idle_ms == 1234
    assert KafkaListener.from_settings(ServerSettings()).max_idle_ms == 600_000
