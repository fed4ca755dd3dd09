"""Direct reply-to and x-delivery-count on real ``wharf serve --cluster`` nodes, with pika.

A direct reply published on another node than its requester's reaches the requester (the
address names the node, the reply goes through the database); the x-delivery-count header of
quorum redeliveries holds across nodes, counted in the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pika
from pika.adapters.blocking_connection import BlockingChannel

from helpers.broker_process import WharfProcess
from helpers.cluster_nodes import ClusterNodes


@contextmanager
def connected(node: WharfProcess) -> Iterator[pika.BlockingConnection]:
    assert node.amqp_port is not None
    connection = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", node.amqp_port, heartbeat=0)
    )
    try:
        yield connection
    finally:
        if connection.is_open:
            connection.close()


def get_one(channel: BlockingChannel, queue: str) -> tuple[object, object]:
    """basic.get until the message is there (a claim may take a moment); (method, props)."""
    for _ in range(300):
        method, props, _ = channel.basic_get(queue)
        if method is not None:
            return method, props
        channel.connection.sleep(0.1)
    raise AssertionError(f"nothing in {queue!r}")


def test_direct_replies_reach_the_requester_on_another_node(cluster_nodes: ClusterNodes) -> None:
    a, b = cluster_nodes.start(2)
    with connected(a) as requester, connected(b) as responder:
        assert requester._impl.server_capabilities["direct_reply_to"] is True
        asking = requester.channel()
        asking.queue_declare("rpc")
        answering = responder.channel()
        answering.queue_declare("rpc", passive=True)
        replies: list[tuple[bytes, str | None]] = []
        asking.basic_consume(
            "amq.rabbitmq.reply-to",
            lambda ch, method, props, body: replies.append((body, props.correlation_id)),
            auto_ack=True,
        )
        asking.confirm_delivery()
        for n in range(3):
            asking.basic_publish("", "rpc", b"question %d" % n, pika.BasicProperties(
                reply_to="amq.rabbitmq.reply-to", correlation_id=str(n)))  # fmt: skip
        answering.confirm_delivery()
        for n in range(3):
            method, props = get_one(answering, "rpc")
            address = props.reply_to
            assert address.startswith("amq.rabbitmq.reply-to.")  # rewritten to an address
            answering.basic_publish(
                "", address, b"answer %d" % n,
                pika.BasicProperties(correlation_id=props.correlation_id), mandatory=True,
            )  # fmt: skip
            answering.basic_ack(method.delivery_tag)
        for _ in range(300):
            if len(replies) == 3:
                break
            requester.process_data_events(time_limit=0.1)
        assert replies == [(b"answer %d" % n, str(n)) for n in range(3)]


def test_quorum_redeliveries_carry_x_delivery_count_across_nodes(
    cluster_nodes: ClusterNodes,
) -> None:
    a, b = cluster_nodes.start(2)
    with connected(a) as on_a, connected(b) as on_b:
        channel_a, channel_b = on_a.channel(), on_b.channel()
        channel_a.queue_declare("qq", durable=True, arguments={"x-queue-type": "quorum"})
        channel_a.confirm_delivery()
        channel_a.basic_publish("", "qq", b"work", mandatory=True)
        seen = []
        for channel in (channel_a, channel_b, channel_a):
            method, props = get_one(channel, "qq")
            seen.append((method.redelivered, (props.headers or {}).get("x-delivery-count")))
            channel.basic_nack(method.delivery_tag, requeue=True)
        assert seen == [(False, None), (True, 1), (True, 2)]
