"""Metadata and DescribeCluster: which brokers there are and where partitions live.

Metadata may create topics when a client asks for one that does not exist, if both the broker
(``auto_create_topics``) and the request (v4+ ``allow_auto_topic_creation``) allow it. A name
this node does not know is looked up once more (``topics.reload()``, a catalogue re-read in a
cluster) before it is reported unknown: another node may have just created it.

Single-node mode: this broker is the only one, leader of every partition.

Cluster mode (``ctx.broker.cluster`` set): the brokers are the live nodes
(``ClusterNode.brokers``, kept fresh by the server from the database), each with its advertised
host and Kafka port, plus this node itself if it is missing there (it is answering, so it is
reachable; it is listed again once it re-registers). Any node takes any partition's produce and
fetch, so leadership is only where clients are sent: each partition's leader is picked among the
live broker ids by rendezvous hashing of (topic, partition, broker id), so partitions spread
evenly and a node's death moves only the partitions it led. Replicas and ISR are ``[leader]``:
batches are durable in the object store, not copied between brokers, so there is no follower to
report. The controller is the lowest live broker id; the cluster id is the one the database
drew at its creation. :func:`brokers`, :func:`this_broker` and :func:`cluster_id` are what the
other handlers (FindCoordinator) name brokers with.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from kio.schema.errors import ErrorCode

from wharf.core.streams.errors import StreamsError
from wharf.protocol.kafka.codec import KafkaRequest
from wharf.protocol.kafka.context import KafkaContext
from wharf.protocol.kafka.errors import kafka_code
from wharf.protocol.kafka.responses import NO_THROTTLE, builder

__all__ = [
    "BrokerAddress",
    "brokers",
    "cluster_id",
    "controller_id",
    "describe_cluster",
    "ensure_topic",
    "leader_of",
    "metadata",
    "this_broker",
]


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    """A broker as Kafka clients are told it."""

    broker_id: int
    host: str
    port: int


def this_broker(ctx: KafkaContext) -> BrokerAddress:
    """This node, as reached through the listener serving ``ctx``."""
    cluster = ctx.broker.cluster
    node = ctx.broker.config.node_id if cluster is None else cluster.broker_id
    return BrokerAddress(node, ctx.advertised_host, ctx.advertised_port)


def brokers(ctx: KafkaContext) -> list[BrokerAddress]:
    """Every live broker, by id (only this one in single-node mode)."""
    me = this_broker(ctx)
    cluster = ctx.broker.cluster
    if cluster is None:
        return [me]
    found = {b.broker_id: BrokerAddress(b.broker_id, b.host, b.kafka_port) for b in cluster.brokers}
    found.setdefault(me.broker_id, me)
    return [found[broker_id] for broker_id in sorted(found)]


def controller_id(live: list[BrokerAddress]) -> int:
    """The lowest live broker id (``live`` is never empty: this broker is in it)."""
    return min(b.broker_id for b in live)


def cluster_id(ctx: KafkaContext) -> str:
    cluster = ctx.broker.cluster
    return ctx.cluster_id if cluster is None else cluster.cluster_id


def leader_of(topic: str, partition: int, broker_ids: list[int]) -> int:
    """The broker id of ``broker_ids`` that leads ``topic``'s ``partition``: the one whose
    hash with the partition is highest (rendezvous hashing, stable across nodes and restarts)."""

    def weight(broker_id: int) -> bytes:
        key = f"{topic}\0{partition}\0{broker_id}".encode()
        return hashlib.blake2b(key, digest_size=8).digest()

    return max(broker_ids, key=weight)


async def ensure_topic(ctx: KafkaContext, name: str, *, allow_create: bool) -> ErrorCode:
    """``none`` if ``name`` exists or was auto-created, else the error to report."""
    topics = ctx.broker.topics
    if topics.find(name) is not None:
        return ErrorCode.none
    if not allow_create:
        await topics.reload()  # in a cluster, a topic another node just created
        found = topics.find(name) is not None
        return ErrorCode.none if found else ErrorCode.unknown_topic_or_partition
    try:
        await topics.ensure(name)
    except StreamsError as exc:
        return kafka_code(exc.code)
    return ErrorCode.none


def _topic_entry(
    ctx: KafkaContext, build: Any, name: str, error: ErrorCode, broker_ids: list[int]
) -> Any:
    topic = ctx.broker.topics.find(name) if error == ErrorCode.none else None
    partitions = ()
    if topic is not None:
        leaders = [
            broker_ids[0] if len(broker_ids) == 1 else leader_of(name, index, broker_ids)
            for index in range(len(topic.partitions))
        ]
        partitions = tuple(
            build(
                "MetadataResponsePartition",
                error_code=ErrorCode.none,
                partition_index=index,
                leader_id=leader,
                leader_epoch=0,
                replica_nodes=(leader,),
                isr_nodes=(leader,),
                offline_replicas=(),
            )
            for index, leader in enumerate(leaders)
        )
    return build(
        "MetadataResponseTopic",
        error_code=error,
        name=name,
        topic_id=topic.topic_id if topic is not None else None,
        is_internal=False,
        partitions=partitions,
    )


async def metadata(ctx: KafkaContext, request: KafkaRequest) -> Any:
    body = request.body
    build = builder(request.api_key, request.api_version)
    # v0: an empty list means all topics; v1+: null means all topics, empty means none.
    requested = body.topics
    if requested is None or (request.api_version == 0 and not requested):
        names = [(t.name, ErrorCode.none) for t in ctx.broker.topics.list()]
    else:
        # v4+ lets the client forbid auto-creation; before v4 the broker setting alone decides.
        allow = getattr(body, "allow_auto_topic_creation", True)
        names = []
        for entry in requested:
            if entry.name is None:  # looked up by topic id (v10+)
                topic = ctx.broker.topics.by_id(entry.topic_id)
                if topic is None:
                    names.append(("", ErrorCode.unknown_topic_id))
                else:
                    names.append((topic.name, ErrorCode.none))
                continue
            names.append((entry.name, await ensure_topic(ctx, entry.name, allow_create=allow)))
    live = brokers(ctx)
    broker_ids = [b.broker_id for b in live]
    return build(
        "MetadataResponse",
        throttle_time=NO_THROTTLE,
        brokers=tuple(
            build(
                "MetadataResponseBroker", node_id=b.broker_id, host=b.host, port=b.port, rack=None
            )
            for b in live
        ),
        cluster_id=cluster_id(ctx),
        controller_id=controller_id(live),
        topics=tuple(_topic_entry(ctx, build, name, error, broker_ids) for name, error in names),
    )


async def describe_cluster(ctx: KafkaContext, request: KafkaRequest) -> Any:
    build = builder(request.api_key, request.api_version)
    live = brokers(ctx)
    return build(
        "DescribeClusterResponse",
        throttle_time=NO_THROTTLE,
        error_code=ErrorCode.none,
        error_message=None,
        cluster_id=cluster_id(ctx),
        controller_id=controller_id(live),
        brokers=tuple(
            build(
                "DescribeClusterBroker", broker_id=b.broker_id, host=b.host, port=b.port, rack=None
            )
            for b in live
        ),
    )
