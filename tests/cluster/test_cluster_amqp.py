"""AMQP queues of a cluster of real ``wharf serve --cluster`` nodes, with pika: confirmed
publishes on one node consumed on another, competing consumers on two nodes, requeues, and
kill -9 of a node holding unacknowledged deliveries or an exclusive queue.

pika's BlockingConnection is used from worker threads (one connection per thread), so the
event loop of the test stays free; the nodes are subprocesses."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import AMQPError, ChannelClosedByBroker

from helpers.broker_process import WharfProcess
from helpers.cluster_nodes import ClusterNodes, channel_on

BOUND_S = 30.0



def abandon(connection: pika.BlockingConnection) -> None:
    """Let pika find out that its node is dead (closing its socket)."""
    deadline = time.monotonic() + BOUND_S
    while connection.is_open and time.monotonic() < deadline:
        try:
            connection.process_data_events(time_limit=0.2)
        except AMQPError:
            break
    assert connection.is_closed


def publish_confirmed(node: WharfProcess, queue: str, bodies: list[bytes]) -> None:
    with channel_on(node) as channel:
        channel.confirm_delivery()
        for body in bodies:
            channel.basic_publish("", queue, body, mandatory=True)


def take(channel: BlockingChannel, queue: str, count: int, *, ack: bool,
         bound_s: float = BOUND_S) -> list[tuple[bytes, bool]]:  # fmt: skip
    """``count`` deliveries (body, redelivered) from a consumer on ``queue``."""
    got: list[tuple[bytes, bool]] = []
    deadline = time.monotonic() + bound_s
    for method, _props, body in channel.consume(queue, inactivity_timeout=0.2):
        if method is not None:
            got.append((body, bool(method.redelivered)))
            if ack:
                channel.basic_ack(method.delivery_tag)
        if len(got) >= count or time.monotonic() > deadline:
            break
    return got


def test_confirmed_publishes_on_one_node_reach_a_consumer_on_another(
    cluster_nodes: ClusterNodes,
) -> None:
    a, b = cluster_nodes.start(2)
    with channel_on(a) as channel:
        channel.queue_declare("orders", durable=True)
    publish_confirmed(a, "orders", [b"o%d" % i for i in range(50)])
    with channel_on(b) as channel:
        declared = channel.queue_declare("orders", passive=True)
        assert declared.method.message_count == 50
        channel.basic_qos(prefetch_count=10)
        got = take(channel, "orders", 50, ack=True)
    assert [body for body, _ in got] == [b"o%d" % i for i in range(50)]
    assert not any(redelivered for _, redelivered in got)


def test_a_rejected_message_comes_back_redelivered(cluster_nodes: ClusterNodes) -> None:
    a, b = cluster_nodes.start(2)
    with channel_on(a) as channel:
        channel.queue_declare("retry")
    publish_confirmed(a, "retry", [b"once"])
    with channel_on(a) as channel:
        method, _, body = channel.basic_get("retry")
        assert method is not None and body == b"once" and not method.redelivered
        channel.basic_reject(method.delivery_tag, requeue=True)
    with channel_on(b) as channel:
        channel.queue_declare("retry")
        [(body, redelivered)] = take(channel, "retry", 1, ack=True)
    assert (body, redelivered) == (b"once", True)


def test_competing_consumers_on_two_nodes_share_a_queue(cluster_nodes: ClusterNodes) -> None:
    a, b = cluster_nodes.start(2)
    total = 300
    with channel_on(a) as channel:
        channel.queue_declare("shared")
    seen: dict[str, list[bytes]] = {"a": [], "b": []}
    stop = threading.Event()

    def consume(node: WharfProcess, name: str) -> None:
        with channel_on(node) as channel:
            channel.queue_declare("shared")  # as clients do: it is current on this node now
            channel.basic_qos(prefetch_count=5)
            for method, _props, body in channel.consume("shared", inactivity_timeout=0.2):
                if method is not None:
                    seen[name].append(body)
                    time.sleep(0.002)
                    channel.basic_ack(method.delivery_tag)
                if stop.is_set():
                    break

    threads = [threading.Thread(target=consume, args=(n, k)) for n, k in ((a, "a"), (b, "b"))]
    for thread in threads:
        thread.start()
    try:
        publish_confirmed(a, "shared", [b"%d" % i for i in range(total)])
        deadline = time.monotonic() + BOUND_S
        while len(seen["a"]) + len(seen["b"]) < total and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    everything = seen["a"] + seen["b"]
    assert sorted(everything) == sorted(b"%d" % i for i in range(total))  # all, none twice
    assert seen["a"] and seen["b"]


@dataclass
class Waited:
    seconds: float = 0.0
    got: list[tuple[bytes, bool]] = field(default_factory=list)


def wait_until(check: Callable[[], bool], bound_s: float = BOUND_S) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < bound_s, "not within the bound"
        time.sleep(0.1)
    return time.monotonic() - start


def test_kill_9_returns_a_dead_nodes_unacked_deliveries_to_a_consumer_elsewhere(
    cluster_nodes: ClusterNodes,
) -> None:
    a, b = cluster_nodes.start(2)
    with channel_on(a) as channel:
        channel.queue_declare("held", durable=True)
    publish_confirmed(a, "held", [b"h%d" % i for i in range(20)])
    holder = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", a.amqp_port))
    channel = holder.channel()
    channel.basic_qos(prefetch_count=10)
    unacked = take(channel, "held", 10, ack=False)
    assert len(unacked) == 10
    a.kill()
    killed_at = time.monotonic()
    abandon(holder)
    with channel_on(b) as other:
        other.queue_declare("held", durable=True)
        got = take(other, "held", 20, ack=True)
    waited = time.monotonic() - killed_at
    assert sorted(body for body, _ in got) == sorted(b"h%d" % i for i in range(20))
    redelivered = {body for body, flag in got if flag}
    assert redelivered == {body for body, _ in unacked}
    print(f"\nredelivered {len(redelivered)} after kill -9 in {waited:.2f} s")


def test_a_dead_nodes_exclusive_queue_goes_away(cluster_nodes: ClusterNodes) -> None:
    a, b = cluster_nodes.start(2)
    holder = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", a.amqp_port))
    name = holder.channel().queue_declare("", exclusive=True).method.queue
    with channel_on(b) as channel, pytest.raises(ChannelClosedByBroker) as locked:
        channel.queue_declare(name, passive=True)
    assert locked.value.reply_code == 405
    a.kill()
    abandon(holder)

    def gone() -> bool:
        try:
            with channel_on(b) as channel:
                channel.queue_declare(name, passive=True)
        except ChannelClosedByBroker as exc:
            return exc.reply_code == 404
        except AMQPError:
            return False
        return False

    wait_until(gone)


def test_a_node_paused_past_its_lease_loses_its_deliveries_and_its_late_acks_take_nothing(
    cluster_nodes: ClusterNodes,
) -> None:
    a, b = cluster_nodes.start(2)
    with channel_on(b) as channel:
        channel.queue_declare("fenced")
    publish_confirmed(b, "fenced", [b"f%d" % i for i in range(5)])
    stale = pika.BlockingConnection(
        pika.ConnectionParameters("127.0.0.1", a.amqp_port, heartbeat=0)
    )
    stale_channel = stale.channel()
    stale_channel.queue_declare("fenced")
    stale_channel.basic_qos(prefetch_count=5)
    held = []
    for method, _props, body in stale_channel.consume("fenced", inactivity_timeout=0.2):
        if method is not None:
            held.append((method.delivery_tag, body))
        if len(held) == 5:
            break
    cluster_nodes.pause(0)  # past its lease: the sweep gives its claims to node b's consumer
    try:
        with channel_on(b) as channel:
            channel.queue_declare("fenced")
            channel.basic_qos(prefetch_count=5)
            redelivered = take(channel, "fenced", 5, ack=False)
            assert sorted(body for body, _ in redelivered) == sorted(body for _, body in held)
            assert all(flag for _, flag in redelivered)
            cluster_nodes.resume(0)
            a.wait_for_log("registering again")
            for tag, _ in held:  # acks of deliveries node a's old epoch claimed
                stale_channel.basic_ack(tag)
            stale.close()  # after the acks (its consumer would compete for what follows)
            channel.basic_recover(requeue=True)  # node b gives them back: still all there
            again = take(channel, "fenced", 5, ack=True)
    finally:
        cluster_nodes.resume(0)
        if stale.is_open:
            stale.close()
    assert sorted(body for body, _ in again) == sorted(body for _, body in held)
