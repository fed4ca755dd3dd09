"""Direct reply-to and x-delivery-count with real clients: pika, aio-pika and kombu.

Each RPC test has a requester consuming ``amq.rabbitmq.reply-to`` and a responder on another
connection (with pika, in another process) taking requests from a queue and publishing each
reply to the address it finds in the request's ``reply-to``.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import aio_pika
import kombu
import pika
import pytest
from amqp_inprocess import InProcessBroker
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ChannelClosedByBroker, UnroutableError

pytestmark = pytest.mark.interop

REPLY = "amq.rabbitmq.reply-to"

# The responder process: answers ``count`` requests from ``rpc-requests``, upper-casing them.
RESPONDER = """
import sys
import pika

port, count = int(sys.argv[1]), int(sys.argv[2])
conn = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
channel = conn.channel()
channel.queue_declare("rpc-requests")
print("ready", flush=True)
for n, (method, props, body) in enumerate(channel.consume("rpc-requests"), 1):
    channel.basic_publish(
        "", props.reply_to, body.upper(),
        pika.BasicProperties(correlation_id=props.correlation_id, headers={"to": props.reply_to}),
    )
    channel.basic_ack(method.delivery_tag)
    if n == count:
        break
conn.close()
"""


def pika_connection(broker: InProcessBroker) -> pika.BlockingConnection:
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", broker.port))


def test_pika_rpc_round_trip_with_a_responder_process(amqp_broker: InProcessBroker) -> None:
    responder = subprocess.Popen(
        [sys.executable, "-c", RESPONDER, str(amqp_broker.port), "5"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert responder.stdout is not None and responder.stdout.readline() == "ready\n"
        conn = pika_connection(amqp_broker)
        try:
            assert conn._impl.server_capabilities["direct_reply_to"] is True
            channel = conn.channel()
            replies: dict[str, tuple[bytes, Any]] = {}

            def on_reply(_: BlockingChannel, method: Any, props: Any, body: bytes) -> None:
                replies[props.correlation_id] = (body, props.headers["to"])

            channel.basic_consume(REPLY, on_reply, auto_ack=True)
            for i in range(5):
                channel.basic_publish(
                    "", "rpc-requests", f"ping {i}".encode(),
                    pika.BasicProperties(reply_to=REPLY, correlation_id=str(i)),
                )  # fmt: skip
            for _ in range(300):
                if len(replies) == 5:
                    break
                conn.process_data_events(time_limit=0.1)
            assert {k: v[0] for k, v in replies.items()} == {
                str(i): f"PING {i}".encode() for i in range(5)
            }
            addresses = {v[1] for v in replies.values()}
            assert len(addresses) == 1 and addresses.pop().startswith(REPLY + ".")
        finally:
            conn.close()
        assert responder.wait(timeout=30) == 0
    finally:
        if responder.poll() is None:
            responder.kill()
            responder.wait()
        if responder.stdout is not None:
            responder.stdout.close()


def test_pika_passive_declare_and_refusals(amqp_broker: InProcessBroker) -> None:
    conn = pika_connection(amqp_broker)
    try:
        channel = conn.channel()
        ok = channel.queue_declare(REPLY, passive=True).method
        assert (ok.queue, ok.message_count, ok.consumer_count) == (REPLY, 0, 1)
        with pytest.raises(ChannelClosedByBroker) as closed:
            channel.basic_consume(REPLY, lambda *a: None, auto_ack=False)
        assert closed.value.reply_code == 406
        assert "reply consumer cannot acknowledge" in closed.value.reply_text

        channel = conn.channel()
        channel.queue_declare("rpc-requests")
        channel.basic_publish("", "rpc-requests", b"x", pika.BasicProperties(reply_to=REPLY))
        with pytest.raises(ChannelClosedByBroker) as closed:
            channel.queue_declare("rpc-requests", passive=True)
        assert closed.value.reply_code == 406
        assert "fast reply consumer does not exist" in closed.value.reply_text
    finally:
        conn.close()


def test_pika_reply_to_a_gone_requester_comes_back_to_the_responder(
    amqp_broker: InProcessBroker,
) -> None:
    conn = pika_connection(amqp_broker)
    try:
        requester = conn.channel()
        requester.queue_declare("rpc-requests")
        requester.basic_consume(REPLY, lambda *a: None, auto_ack=True)
        requester.basic_publish("", "rpc-requests", b"x", pika.BasicProperties(reply_to=REPLY))
        responder = conn.channel()
        responder.confirm_delivery()
        method, props, _ = responder.basic_get("rpc-requests", auto_ack=True)
        assert method is not None
        requester.close()
        with pytest.raises(UnroutableError) as returned:
            responder.basic_publish("", props.reply_to, b"late", mandatory=True)
        assert [m.method.reply_code for m in returned.value.messages] == [312]
        with pytest.raises(ChannelClosedByBroker) as closed:
            responder.queue_declare(props.reply_to, passive=True)
        assert closed.value.reply_code == 404
    finally:
        conn.close()


def test_pika_sees_x_delivery_count_on_quorum_redeliveries(amqp_broker: InProcessBroker) -> None:
    conn = pika_connection(amqp_broker)
    try:
        channel = conn.channel()
        channel.queue_declare("qq", durable=True, arguments={"x-queue-type": "quorum"})
        channel.basic_publish("", "qq", b"work")
        counts = []
        for _ in range(3):
            method, props, _ = channel.basic_get("qq")
            counts.append((method.redelivered, (props.headers or {}).get("x-delivery-count")))
            channel.basic_nack(method.delivery_tag, requeue=True)
        assert counts == [(False, None), (True, 1), (True, 2)]
    finally:
        conn.close()


async def test_aio_pika_rpc_round_trip(amqp_broker: InProcessBroker) -> None:
    requester = await aio_pika.connect(amqp_broker.url)
    responder = await aio_pika.connect(amqp_broker.url)
    async with requester, responder:
        serving = await responder.channel()
        requests = await serving.declare_queue("aio-requests")

        async def serve(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                assert message.reply_to is not None and message.reply_to != REPLY
                await serving.default_exchange.publish(
                    aio_pika.Message(message.body[::-1], correlation_id=message.correlation_id),
                    routing_key=message.reply_to,
                    mandatory=True,
                )

        await requests.consume(serve)
        channel = await requester.channel()
        reply_queue = await channel.get_queue(REPLY)  # a passive declare
        loop = asyncio.get_running_loop()
        waiting: dict[str, asyncio.Future[bytes]] = {}

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            waiting.pop(str(message.correlation_id)).set_result(message.body)

        await reply_queue.consume(on_reply, no_ack=True)
        for i in range(10):
            waiting[str(i)] = loop.create_future()
        futures = list(waiting.values())
        for i in range(10):
            await channel.default_exchange.publish(
                aio_pika.Message(f"call {i}".encode(), reply_to=REPLY, correlation_id=str(i)),
                routing_key="aio-requests",
            )
        answers = await asyncio.wait_for(asyncio.gather(*futures), 15)
        assert answers == [f"call {i}".encode()[::-1] for i in range(10)]


def test_kombu_consumer_and_producer_on_the_reply_pseudo_queue(
    amqp_broker: InProcessBroker,
) -> None:
    url = f"pyamqp://guest:guest@127.0.0.1:{amqp_broker.port}//"
    requests = kombu.Queue("kombu-requests")
    replies_queue = kombu.Queue(REPLY, no_ack=True)  # kombu declares it (not passively)
    with kombu.Connection(url) as conn, kombu.Connection(url) as server:
        received: list[tuple[Any, Any]] = []

        def on_reply(body: Any, message: kombu.Message) -> None:
            received.append((body, message.properties["correlation_id"]))

        with conn.Consumer(replies_queue, callbacks=[on_reply]):
            conn.Producer(serializer="json").publish(
                {"add": [2, 3]},
                routing_key="kombu-requests",
                declare=[requests],
                reply_to=REPLY,
                correlation_id="k1",
                retry=False,
            )
            request = requests(server.default_channel).get(no_ack=True)
            assert request is not None and request.properties["reply_to"].startswith(REPLY + ".")
            server.Producer(serializer="json").publish(
                sum(request.payload["add"]),
                routing_key=request.properties["reply_to"],
                correlation_id=request.properties["correlation_id"],
                retry=False,
            )
            while not received:
                conn.drain_events(timeout=10)
        assert received == [(5, "k1")]
