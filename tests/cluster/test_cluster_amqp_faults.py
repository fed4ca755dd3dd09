"""Kill -9 of a node while confirmed publishes go on: every confirmed message is delivered at
least once, and none after an ack that committed (helpers/amqp_checker.py).

Three nodes: the publisher on node 0, a consumer on node 1 and one on node 2. Either the
publisher's node is killed once a third of the messages are confirmed (the publisher moves to
node 2 and publishes again what was not confirmed), or node 1 is: its consumer is slow (it
holds up to its prefetch unacknowledged), and its unacknowledged deliveries must come back (by
the sweep of its epoch's claims) to the consumer on node 2."""

from __future__ import annotations

import threading
import time

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError

from helpers.amqp_checker import Journal, check
from helpers.broker_process import WharfProcess
from helpers.cluster_nodes import ClusterNodes

TOTAL = 1500
BOUND_S = 60.0


def consume(
    node: WharfProcess, name: str, journal: Journal, stop: threading.Event, pause_s: float
) -> None:
    """Consume and ack (``pause_s`` after each delivery) until ``stop`` or the node dies."""
    try:
        connection = pika.BlockingConnection(
            pika.ConnectionParameters("127.0.0.1", node.amqp_port, heartbeat=0)
        )
        channel = connection.channel()
        channel.queue_declare("checked", durable=True)
        channel.basic_qos(prefetch_count=20)
        for method, _props, body in channel.consume("checked", inactivity_timeout=0.2):
            if method is not None:
                journal.delivered(name, body, bool(method.redelivered))
                time.sleep(pause_s)
                channel.basic_ack(method.delivery_tag)
                journal.acked(name, body)
            if stop.is_set():
                break
        connection.close()
    except AMQPError:
        return  # its node was killed


def confirming_channel(node: WharfProcess) -> tuple[pika.BlockingConnection, BlockingChannel]:
    connection = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", node.amqp_port, heartbeat=0)
    )
    channel = connection.channel()
    channel.queue_declare("checked", durable=True)
    channel.confirm_delivery()
    return connection, channel


@pytest.mark.parametrize("killed", ["consumer", "publisher"])
def test_kill_9_of_a_node_under_confirmed_publishes(
    cluster_nodes: ClusterNodes, killed: str
) -> None:
    publisher_node, consumer_node, survivor = cluster_nodes.start(3)
    doomed = consumer_node if killed == "consumer" else publisher_node
    journal = Journal()
    connection, channel = confirming_channel(publisher_node)
    stops = {name: threading.Event() for name in ("node1", "node2")}
    threads = [
        threading.Thread(target=consume, args=(node, name, journal, stops[name], pause_s))
        for node, name, pause_s in ((consumer_node, "node1", 0.02), (survivor, "node2", 0.0))
    ]
    for thread in threads:
        thread.start()
    killed_at = 0.0
    try:
        i = 0
        while i < TOTAL:
            body = b"m-%06d" % i
            try:
                channel.basic_publish("", "checked", body, mandatory=True)
            except AMQPError:  # the publisher's node died: publish it again elsewhere
                connection, channel = confirming_channel(survivor)
                continue
            journal.confirm(body)
            i += 1
            if i == TOTAL // 3:
                doomed.kill()
                killed_at = time.monotonic()
        connection.close()
        deadline = time.monotonic() + BOUND_S
        while journal.confirmed - journal.delivered_bodies() and time.monotonic() < deadline:
            time.sleep(0.1)
        drained_after = time.monotonic() - killed_at
    finally:
        for stop in stops.values():
            stop.set()
        for thread in threads:
            thread.join()
    report = check(journal, dead_consumers={"node1"} if killed == "consumer" else set())
    print(
        f"\nkilled the {killed}'s node: confirmed {report.confirmed}, delivered "
        f"{report.delivered} ({report.deliveries} deliveries, {report.redeliveries} "
        f"redeliveries, {report.redelivered_after_lost_ack} after an ack lost with its node), "
        f"lost {len(report.lost)}, after a committed ack {len(report.after_ack)}; "
        f"all delivered {drained_after:.1f} s after the kill"
    )
    assert report.confirmed == TOTAL
    assert report.ok, report
    assert report.delivered == TOTAL
    if killed == "consumer":
        assert report.redeliveries  # the killed node's consumer held some unacknowledged
