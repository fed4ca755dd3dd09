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
    """The counters now: read straight off the partitions and queues, with nothing built per
    topic or sorted (the rate tracker calls this every second, however many there are)."""
    published = delivered = bytes_in = 0
    for partition in broker.topics.partitions():
        published += partition.log_end_offset
        bytes_in += partition.bytes_in
    per_queue: dict[tuple[str, str], tuple[int, int, int]] = {}
    for host in view.vhosts(broker):
        for name, queue in host.queues.items():
            published += queue.published
            delivered += queue.delivered
            per_queue[(host.name, name)] = (queue.published, queue.delivered, queue.acked)
    lag = 0
    for _, row in view.all_group_offsets(broker):
        delivered += row.committed
        lag += row.lag
    return Counters(published, delivered, bytes_in, lag, per_queue)
