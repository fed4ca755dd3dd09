"""Broker-wide counters read at sampling or scrape time (never counted on the hot path).

``published`` adds every partition's log end offset (each appended record takes one offset)
and every queue's publish counter. ``delivered`` adds queue deliveries and, for streams, the
consumer groups' committed offsets (what groups have consumed and committed), since the core
counts fetched bytes, not fetched records. ``consumer_lag`` sums every group's lag.
"""

from __future__ import annotations

from dataclasses import dataclass

from wharf.core.broker import Broker
from wharf.http.views import broker as view


@dataclass(frozen=True, slots=True)
class Counters:
    published: int
    delivered: int
    bytes_in: int
    consumer_lag: int
    queues: dict[tuple[str, str], tuple[int, int, int]]  # (vhost, name) -> pub, deliver, ack


def sample_counters(broker: Broker) -> Counters:
    published = delivered = bytes_in = 0
    for topic in view.topic_stats(broker):
        for partition in topic.partitions:
            published += partition.end_offset
            bytes_in += partition.bytes_in
    per_queue: dict[tuple[str, str], tuple[int, int, int]] = {}
    for queue in view.queues(broker):
        published += queue.published
        delivered += queue.delivered
        per_queue[(queue.vhost, queue.name)] = (queue.published, queue.delivered, queue.acked)
    lag = 0
    for _, row in view.all_group_offsets(broker):
        delivered += row.committed
        lag += row.lag
    return Counters(published, delivered, bytes_in, lag, per_queue)
