"""Other AMQP clients against Wharf: pika's asyncio adapter, aio-pika, py-amqp and kombu."""

from __future__ import annotations

import asyncio

import aio_pika
import amqp
import kombu
import pika
import pytest
from amqp_inprocess import InProcessBroker
from pika.adapters.asyncio_connection import AsyncioConnection

pytestmark = pytest.mark.interop


async def test_pika_asyncio_adapter_publish_consume_with_confirms(
    amqp_broker: InProcessBroker,
) -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[list[bytes]] = loop.create_future()
    received: list[bytes] = []
    acks: list[int] = []

    def on_open(conn: AsyncioConnection) -> None:
        conn.channel(on_open_callback=on_channel)

    def on_channel(channel: pika.channel.Channel) -> None:
        channel.confirm_delivery(lambda frame: acks.append(frame.method.delivery_tag))
        channel.queue_declare("asyncio-q", callback=lambda _: on_declared(channel))

    def on_declared(channel: pika.channel.Channel) -> None:
        for i in range(10):
            channel.basic_publish("", "asyncio-q", f"m{i}".encode())
        channel.basic_consume("asyncio-q", lambda ch, m, p, body: on_message(ch, m, body))

    def on_message(channel: pika.channel.Channel, method, body: bytes) -> None:
        received.append(body)
        channel.basic_ack(method.delivery_tag)
        if len(received) == 10 and not done.done():
            done.set_result(received)

    conn = AsyncioConnection(
        pika.ConnectionParameters("127.0.0.1", amqp_broker.port),
        on_open_callback=on_open,
        on_open_error_callback=lambda c, e: done.set_exception(e),
        custom_ioloop=loop,
    )
    try:
        assert await asyncio.wait_for(done, 15) == [f"m{i}".encode() for i in range(10)]
        for _ in range(100):
            if acks and max(acks) == 10:
                break
            await asyncio.sleep(0.05)
        assert max(acks) == 10  # multiple=true acks cover every publish
    finally:
        closed = loop.create_future()
        conn.add_on_close_callback(lambda c, e: closed.done() or closed.set_result(None))
        conn.close()
        await asyncio.wait_for(closed, 10)


async def test_aio_pika_robust_round_trip_and_rpc_pattern(amqp_broker: InProcessBroker) -> None:
    connection = await aio_pika.connect_robust(amqp_broker.url)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=10)
        exchange = await channel.declare_exchange("aio-topic", aio_pika.ExchangeType.TOPIC)
        queue = await channel.declare_queue("aio-q", durable=True)
        await queue.bind(exchange, routing_key="orders.*")
        for i in range(50):
            await exchange.publish(
                aio_pika.Message(
                    f"order {i}".encode(),
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    headers={"n": i},
                ),
                routing_key="orders.new",
            )
        bodies = []
        async with queue.iterator() as it:
            async for message in it:
                async with message.process():
                    assert message.headers["n"] == len(bodies)
                    bodies.append(message.body)
                if len(bodies) == 50:
                    break
        assert bodies == [f"order {i}".encode() for i in range(50)]

        # RPC over a server-named exclusive reply queue.
        replies = await channel.declare_queue(exclusive=True)
        server_queue = await channel.declare_queue("aio-rpc")

        async def serve(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                await channel.default_exchange.publish(
                    aio_pika.Message(
                        message.body.upper(), correlation_id=message.correlation_id
                    ),
                    routing_key=message.reply_to,
                )

        await server_queue.consume(serve)
        await channel.default_exchange.publish(
            aio_pika.Message(b"ping", reply_to=replies.name, correlation_id="c1"),
            routing_key="aio-rpc",
        )
        reply = await replies.get(timeout=10, fail=False)
        for _ in range(100):
            if reply is not None:
                break
            await asyncio.sleep(0.05)
            reply = await replies.get(timeout=10, fail=False)
        assert reply is not None
        assert (reply.body, reply.correlation_id) == (b"PING", "c1")
        await reply.ack()


def test_py_amqp_with_amqplain_login(amqp_broker: InProcessBroker) -> None:
    conn = amqp.Connection(
        f"127.0.0.1:{amqp_broker.port}", userid="guest", password="guest", login_method="AMQPLAIN"
    )
    conn.connect()
    try:
        assert conn.server_properties["product"] == "Wharf"
        channel = conn.channel()
        channel.queue_declare("pyamqp-q", auto_delete=False)
        message = amqp.Message("hello", content_type="text/plain")
        channel.basic_publish(message, routing_key="pyamqp-q")
        message = None
        for _ in range(100):
            message = channel.basic_get("pyamqp-q", no_ack=True)
            if message is not None:
                break
        assert message is not None and message.body == "hello"
        tag = channel.basic_consume("pyamqp-q", callback=lambda m: None)
        assert tag.startswith("amq.ctag-")  # an empty tag asks the server for one
        channel.basic_cancel(tag)
    finally:
        conn.close()


def test_kombu_producer_consumer(amqp_broker: InProcessBroker) -> None:
    exchange = kombu.Exchange("kombu-ex", type="direct")
    queue = kombu.Queue("kombu-q", exchange, routing_key="task")
    with kombu.Connection(f"pyamqp://guest:guest@127.0.0.1:{amqp_broker.port}//") as conn:
        producer = conn.Producer(serializer="json")
        for i in range(5):
            producer.publish(
                {"n": i}, exchange=exchange, routing_key="task", declare=[queue], retry=False
            )
        received: list[dict[str, int]] = []

        def on_message(body: dict[str, int], message: kombu.Message) -> None:
            received.append(body)
            message.ack()

        with conn.Consumer(queue, callbacks=[on_message], prefetch_count=2):
            while len(received) < 5:
                conn.drain_events(timeout=10)
        assert received == [{"n": i} for i in range(5)]
        simple = conn.SimpleQueue("kombu-simple")
        simple.put({"hello": "world"})
        message = simple.get(block=True, timeout=10)
        assert message.payload == {"hello": "world"}
        message.ack()
        simple.close()


def test_heartbeats_keep_an_idle_connection_open(amqp_broker: InProcessBroker) -> None:
    conn = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", amqp_broker.port, heartbeat=1)
    )
    try:
        # Idle for 3.5 heartbeat intervals while pika answers heartbeats; the broker keeps us.
        conn.sleep(3.5)
        assert conn.is_open
        channel = conn.channel()
        channel.queue_declare("hb")
    finally:
        conn.close()
