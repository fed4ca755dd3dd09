"""The cluster's consumer registry with pika against real ``wharf serve --cluster`` nodes: a
single active consumer handed to the next registered consumer on the other node when it
cancels, and again when its node is killed with -9; an exclusive consumer refusing consumers
on the other node; a shared auto-delete queue deleted when its last consumer, on the other
node, cancels; an unused x-expires queue deleted."""

from __future__ import annotations

import time
from collections.abc import Callable

import pika
import pytest
from pika.exceptions import ChannelClosedByBroker, UnroutableError
from test_cluster_amqp import abandon, channel_on, publish_confirmed, wait_until

from helpers.broker_process import WharfProcess
from helpers.cluster_nodes import ClusterNodes

BOUND_S = 30.0
SAC = {"x-single-active-consumer": True}


class Collector:
    """One pika connection with one auto-ack consumer of ``queue``, driven by :meth:`pump`."""

    def __init__(self, node: WharfProcess, queue: str) -> None:
        self.connection = pika.BlockingConnection(
            pika.ConnectionParameters("127.0.0.1", node.amqp_port, heartbeat=0)
        )
        self.channel = self.connection.channel()
        self.got: list[bytes] = []
        self.tag = self.channel.basic_consume(queue, self._received, auto_ack=True)

    def _received(self, _channel: object, _method: object, _props: object, body: bytes) -> None:
        self.got.append(body)

    def pump(self) -> None:
        self.connection.process_data_events(time_limit=0.05)

    def close(self) -> None:
        if self.connection.is_open:
            self.connection.close()


def pump_until(check: Callable[[], bool], collectors: list[Collector]) -> float:
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < BOUND_S, "not within the bound"
        for collector in collectors:
            collector.pump()
    return time.monotonic() - start


def test_the_single_active_consumer_fails_over_across_nodes_on_cancel_and_on_kill_9(
    cluster_nodes: ClusterNodes,
) -> None:
    a, b = cluster_nodes.start(2)
    with channel_on(a) as channel:
        channel.queue_declare("sac", durable=True, arguments=SAC)
    first, second, third = Collector(a, "sac"), Collector(b, "sac"), Collector(a, "sac")
    everyone = [first, second, third]
    try:
        publish_confirmed(a, "sac", [b"m%d" % i for i in range(5)])
        pump_until(lambda: len(first.got) == 5, everyone)
        first.channel.basic_cancel(first.tag)  # the next registered, on node b, takes over
        publish_confirmed(a, "sac", [b"m%d" % i for i in range(5, 10)])
        pump_until(lambda: len(second.got) == 5, everyone)
        b.kill()  # the active consumer's node: the one registered after it, on a, takes over
        killed_at = time.monotonic()
        abandon(second.connection)
        publish_confirmed(a, "sac", [b"m%d" % i for i in range(10, 15)])
        pump_until(lambda: len(third.got) == 5, [first, third])
        waited = time.monotonic() - killed_at
        for collector in (first, third):  # nothing more comes to either
            collector.connection.process_data_events(time_limit=0.3)
    finally:
        for collector in everyone:
            collector.close()
    assert first.got == [b"m%d" % i for i in range(5)]
    assert second.got == [b"m%d" % i for i in range(5, 10)]
    assert third.got == [b"m%d" % i for i in range(10, 15)]
    print(f"\nsingle active consumer moved {waited:.2f} s after kill -9 of its node")


def test_exclusive_consumers_auto_delete_and_x_expires_hold_across_nodes(
    cluster_nodes: ClusterNodes,
) -> None:
    a, b = cluster_nodes.start(2)
    with channel_on(a) as channel:
        channel.queue_declare("shared")
        channel.queue_declare("auto", auto_delete=True)
        channel.queue_declare("idle", arguments={"x-expires": 300})
    # an exclusive consumer on a: a consumer on b is refused
    with channel_on(a) as channel:
        channel.basic_consume("shared", lambda *_: None, exclusive=True)
        with channel_on(b) as other, pytest.raises(ChannelClosedByBroker) as refused:
            other.basic_consume("shared", lambda *_: None)
        assert refused.value.reply_code == 403
        assert "in exclusive use" in refused.value.reply_text
    # auto-delete: the queue stays while a consumer on b is left, and goes with it
    on_a, on_b = Collector(a, "auto"), Collector(b, "auto")
    try:
        on_a.channel.basic_cancel(on_a.tag)
        time.sleep(1.5)  # a sweep or more: still there
        with channel_on(b) as channel:
            assert channel.queue_declare("auto", passive=True).method.consumer_count == 1
        on_b.channel.basic_cancel(on_b.tag)
        wait_until(lambda: not exists(a, "auto"))
    finally:
        on_a.close()
        on_b.close()
    # x-expires: unused for 300 ms, deleted (watched by publishing, which is no use)
    wait_until(lambda: not exists(b, "idle"))


def exists(node: WharfProcess, queue: str) -> bool:
    """Whether a mandatory publish to ``queue`` through ``node`` is routed (neither a use of
    the queue nor a declaration)."""
    with channel_on(node) as channel:
        channel.confirm_delivery()
        try:
            channel.basic_publish("", queue, b"probe", mandatory=True)
        except UnroutableError:
            return False
    return True
