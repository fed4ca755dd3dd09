"""Large bodies and delayed exchanges across real ``wharf serve --cluster`` nodes, with pika:
1 MiB messages published with confirms on one node and consumed intact on the other, their
objects gone once acknowledged; a delayed message published on one node and delivered on the
other once due."""

from __future__ import annotations

import asyncio
import os
import time

import pika
from pika.adapters.blocking_connection import BlockingChannel

from helpers.cluster_nodes import ClusterNodes, channel_on
from helpers.s3_server import S3Server
from wharf.cluster.objectstore import ObjectStore, ObjectStoreConfig
from wharf.cluster.queues.bodies import BODY_PREFIX

BOUND_S = 30.0



def body_objects(nodes: ClusterNodes, s3: S3Server) -> int:
    async def count() -> int:
        config = ObjectStoreConfig.from_url(
            nodes.object_store_url, endpoint=s3.endpoint, region=s3.region,
            access_key=s3.access_key, secret_key=s3.secret_key,
        )  # fmt: skip
        async with await ObjectStore.open(config) as store:
            return len(await store.list(BODY_PREFIX))

    return asyncio.run(count())


def take(channel: BlockingChannel, queue: str, count: int) -> list[tuple[bytes, dict[str, object]]]:
    """``count`` deliveries (body, headers), acknowledged."""
    got: list[tuple[bytes, dict[str, object]]] = []
    deadline = time.monotonic() + BOUND_S
    for method, props, body in channel.consume(queue, inactivity_timeout=0.2):
        if method is not None:
            got.append((body, dict(props.headers or {})))
            channel.basic_ack(method.delivery_tag)
        if len(got) >= count or time.monotonic() > deadline:
            break
    channel.cancel()
    return got


def test_one_mib_messages_published_on_one_node_are_consumed_intact_on_the_other(
    cluster_nodes: ClusterNodes, s3_server: S3Server
) -> None:
    cluster_nodes.env["WHARF_CLUSTER_JOBS_INTERVAL_MS"] = "1000"
    a, b = cluster_nodes.start(2)
    bodies = [os.urandom(1 << 20) for _ in range(4)]
    with channel_on(a) as channel:
        channel.exchange_declare("fan", "fanout")
        for queue in ("big-1", "big-2"):
            channel.queue_declare(queue, durable=True)
            channel.queue_bind(queue, "fan")
        channel.confirm_delivery()
        for body in bodies:
            channel.basic_publish("fan", "", body, mandatory=True)
    assert body_objects(cluster_nodes, s3_server) == len(bodies)  # one per publish
    with channel_on(b) as channel:
        channel.basic_qos(prefetch_count=2)
        for queue in ("big-1", "big-2"):
            channel.queue_declare(queue, durable=True)
            assert [body for body, _ in take(channel, queue, len(bodies))] == bodies
    deadline = time.monotonic() + BOUND_S
    while body_objects(cluster_nodes, s3_server) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert body_objects(cluster_nodes, s3_server) == 0


def test_a_delayed_message_published_on_one_node_is_delivered_on_the_other(
    cluster_nodes: ClusterNodes,
) -> None:
    a, b = cluster_nodes.start(2)
    with channel_on(a) as channel:
        channel.exchange_declare("later", "x-delayed-message",
                                 arguments={"x-delayed-type": "direct"})  # fmt: skip
        channel.queue_declare("due", durable=True)
        channel.queue_bind("due", "later", "k")
        channel.confirm_delivery()
        for body, delay in ((b"in a minute", 60_000), (b"soon", 300)):
            props = pika.BasicProperties(headers={"x-delay": delay, "n": 1})
            channel.basic_publish("later", "k", body, props, mandatory=True)
        # held counts as routed (no basic.return), as with RabbitMQ's plugin
        soon = pika.BasicProperties(headers={"x-delay": 1})
        channel.basic_publish("later", "nobody", b"dropped when due", soon, mandatory=True)
    with channel_on(b) as channel:
        channel.queue_declare("due", durable=True)
        assert take(channel, "due", 1) == [(b"soon", {"n": 1})]
        assert channel.queue_declare("due", passive=True).method.message_count == 0
