"""Dead-lettering and reject-publish on real ``wharf serve --cluster`` nodes, with pika: a message
rejected on node B is consumed from the dead-letter queue on node A with its x-death headers, an
expired one is dead-lettered, and a publish to a full reject-publish queue is nacked while the
same channel's other publishes are confirmed."""

from __future__ import annotations

import time
from typing import Any

import pytest
from pika.adapters.blocking_connection import BlockingChannel
from pika.exceptions import NackError

from helpers.cluster_nodes import ClusterNodes, channel_on

BOUND_S = 30.0



def next_message(channel: BlockingChannel, queue: str) -> tuple[Any, Any, bytes]:
    """basic.get until a message comes (bounded)."""
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        method, properties, body = channel.basic_get(queue)
        if method is not None:
            return method, properties, body
        time.sleep(0.1)
    raise AssertionError(f"nothing arrived in {queue} within {BOUND_S} s")


def test_rejected_and_expired_messages_reach_the_dead_letter_queue_on_another_node(
    cluster_nodes: ClusterNodes,
) -> None:
    a, b = cluster_nodes.start(2)
    with channel_on(a) as channel:
        channel.exchange_declare("dlx", "direct")
        channel.queue_declare("dead")
        channel.queue_bind("dead", "dlx", "work")
        channel.queue_declare("work", arguments={"x-dead-letter-exchange": "dlx"})
        channel.queue_declare("short", arguments={"x-dead-letter-exchange": "dlx",
                                                  "x-dead-letter-routing-key": "work",
                                                  "x-message-ttl": 200})  # fmt: skip
        channel.confirm_delivery()
        channel.basic_publish("", "work", b"poison")
        channel.basic_publish("", "short", b"too late")
    with channel_on(b) as channel:
        channel.queue_declare("work", passive=True)
        method, _, body = next_message(channel, "work")
        assert body == b"poison"
        channel.basic_reject(method.delivery_tag, requeue=False)
    with channel_on(a) as channel:
        got = {}
        for _ in range(2):
            method, properties, body = next_message(channel, "dead")
            got[body] = properties.headers
            channel.basic_ack(method.delivery_tag)
    [rejected] = got[b"poison"]["x-death"]
    assert (rejected["reason"], rejected["queue"], rejected["count"]) == ("rejected", "work", 1)
    assert (rejected["exchange"], rejected["routing-keys"]) == ("", ["work"])
    [expired] = got[b"too late"]["x-death"]
    assert (expired["reason"], expired["queue"]) == ("expired", "short")
    assert got[b"too late"]["x-first-death-reason"] == "expired"


@pytest.mark.parametrize("overflow", ["reject-publish", "reject-publish-dlx"])
def test_a_publish_to_a_full_queue_is_nacked_and_the_others_confirmed(
    cluster_nodes: ClusterNodes, overflow: str
) -> None:
    a, b = cluster_nodes.start(2)
    with channel_on(a) as channel:
        channel.queue_declare("dead")
        channel.queue_declare("full", arguments={"x-max-length": 2, "x-overflow": overflow,
                                                 "x-dead-letter-exchange": "",
                                                 "x-dead-letter-routing-key": "dead"})  # fmt: skip
    with channel_on(b) as channel:
        channel.queue_declare("full", passive=True)
        channel.confirm_delivery()
        channel.basic_publish("", "full", b"1")
        channel.basic_publish("", "full", b"2")
        with pytest.raises(NackError):
            channel.basic_publish("", "full", b"3")
        channel.basic_publish("", "dead", b"after")  # the channel goes on: confirmed
    with channel_on(a) as channel:
        assert channel.queue_declare("full", passive=True).method.message_count == 2
        dead = [next_message(channel, "dead")[2]]
        if overflow == "reject-publish-dlx":
            dead.append(next_message(channel, "dead")[2])
        assert sorted(dead) == sorted([b"after"] + ([b"3"] if overflow.endswith("dlx") else []))
        assert channel.basic_get("dead")[0] is None


def test_a_transaction_commits_past_a_full_reject_publish_queue(
    cluster_nodes: ClusterNodes,
) -> None:
    """As in single-node mode (and RabbitMQ): in tx mode a publish a full reject-publish queue
    refuses is dropped, and tx.commit still succeeds for the rest."""
    (a,) = cluster_nodes.start(1)
    with channel_on(a) as channel:
        channel.queue_declare("small", arguments={"x-max-length": 1,
                                                  "x-overflow": "reject-publish"})  # fmt: skip
        channel.queue_declare("other")
        channel.tx_select()
        channel.basic_publish("", "small", b"1")
        channel.basic_publish("", "small", b"2")
        channel.basic_publish("", "other", b"kept")
        channel.tx_commit()
        channel.basic_publish("", "other", b"next")
        channel.tx_commit()
        assert channel.queue_declare("small", passive=True).method.message_count == 1
        assert channel.queue_declare("other", passive=True).method.message_count == 2
