"""Crash safety through AMQP against a real ``wharf serve`` process: every publisher-confirmed
persistent message survives SIGKILL, and delayed messages survive a crash too."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import aio_pika
import pika
import pytest

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def url(port: int | None) -> str:
    assert port is not None
    return f"amqp://guest:guest@127.0.0.1:{port}/%2F"


async def test_confirmed_messages_survive_kill_9(start_wharf) -> None:
    server = start_wharf()
    confirmed: list[int] = []
    connection = await aio_pika.connect(url(server.amqp_port))
    channel = await connection.channel(publisher_confirms=True)
    await channel.declare_queue("durable-q", durable=True)

    async def publish_forever() -> None:
        n = 0
        while True:
            batch = list(range(n, n + 50))
            n += 50
            results = await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(
                            f"{i}".encode(), delivery_mode=aio_pika.DeliveryMode.PERSISTENT
                        ),
                        routing_key="durable-q",
                    )
                    for i in batch
                ),
                return_exceptions=True,
            )
            for i, result in zip(batch, results, strict=True):
                if not isinstance(result, BaseException):
                    confirmed.append(i)
            if any(isinstance(r, BaseException) for r in results):
                return

    publisher = asyncio.create_task(publish_forever())
    deadline = time.monotonic() + 60
    while len(confirmed) < 1000 and time.monotonic() < deadline and not publisher.done():
        await asyncio.sleep(0.01)
    assert len(confirmed) >= 1000
    server.kill()  # SIGKILL while publishes are in flight
    await asyncio.wait_for(publisher, 30)
    await asyncio.wait_for(connection.close(), 10)

    server.restart()
    connection = await aio_pika.connect(url(server.amqp_port))
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("durable-q", durable=True, passive=True)
        stored: set[int] = set()
        while True:
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                break
            stored.add(int(message.body))
    missing = set(confirmed) - stored
    assert not missing, f"{len(missing)} confirmed messages lost, e.g. {sorted(missing)[:5]}"


def test_delayed_message_survives_crash(start_wharf) -> None:
    server = start_wharf()
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", server.amqp_port))
    channel = conn.channel()
    channel.confirm_delivery()
    channel.exchange_declare(
        "delayed", "x-delayed-message", durable=True, arguments={"x-delayed-type": "direct"}
    )
    channel.queue_declare("later", durable=True)
    channel.queue_bind("later", "delayed", routing_key="k")
    published = time.time()
    channel.basic_publish(
        "delayed",
        "k",
        b"see you later",
        pika.BasicProperties(delivery_mode=2, headers={"x-delay": 2000}),
    )
    channel.basic_publish("delayed", "k", b"now", pika.BasicProperties(delivery_mode=2))
    assert channel.basic_get("later", auto_ack=True)[2] == b"now"
    assert channel.basic_get("later", auto_ack=True) == (None, None, None)
    conn.close()
    server.kill()

    server.restart()
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", server.amqp_port))
    try:
        channel = conn.channel()
        body = None
        deadline = time.monotonic() + 30
        while body is None and time.monotonic() < deadline:
            body = channel.basic_get("later", auto_ack=True)[2]
            if body is None:
                conn.sleep(0.1)
        assert body == b"see you later"
        assert time.time() - published >= 2.0
    finally:
        conn.close()


def test_graceful_shutdown_closes_clients_with_320(start_wharf) -> None:
    server = start_wharf()
    conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", server.amqp_port))
    try:
        conn.channel().queue_declare("q")
        os.kill(server.pid, signal.SIGTERM)  # the listener sends Connection.Close 320
        with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as info:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                conn.process_data_events(time_limit=0.1)
        assert info.value.reply_code == 320
    finally:
        if conn.is_open:
            conn.close()
    assert server.wait_exit() == 0
