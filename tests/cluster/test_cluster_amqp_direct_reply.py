"""Direct reply-to and x-delivery-count on real ``wharf serve --cluster`` nodes, with pika.

Direct reply-to is refused in cluster mode (a reply would have to reach the requester's node);
the x-delivery-count header of quorum redeliveries holds across nodes, counted in the database.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import ChannelClosedByBroker

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


def test_direct_reply_to_is_refused_clearly_in_cluster_mode(cluster_nodes: ClusterNodes) -> None:
    (a,) = cluster_nodes.start(1)
    with connected(a) as connection:
        assert "direct_reply_to" not in connection._impl.server_capabilities
        channel = connection.channel()
        with pytest.raises(ChannelClosedByBroker) as refused:
            channel.basic_consume("amq.rabbitmq.reply-to", lambda *a: None, auto_ack=True)
        assert refused.value.reply_code == 406
        assert "not supported in cluster mode" in refused.value.reply_text


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
