"""JSON shapes of the HTTP API: request bodies and responses, as msgspec Structs.

Handlers build these and the OpenAPI document takes its component schemas from them, so what
is served and what is documented are the same types. Field names are snake_case; times are
milliseconds since the epoch; message payloads travel as text with an ``encoding`` of
``utf8`` or ``base64``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Encoding = Literal["utf8", "base64"]


class ErrorBody(msgspec.Struct):
    error: str


class Health(msgspec.Struct):
    status: str


class ListenerInfo(msgspec.Struct):
    name: str
    host: str
    port: int
    ready: bool


class Readiness(msgspec.Struct):
    ready: bool
    storage_recovered: bool
    listeners: list[ListenerInfo]


class Totals(msgspec.Struct):
    topics: int
    partitions: int
    groups: int
    queues: int
    exchanges: int
    connections: int
    messages_published: int
    messages_delivered: int
    queue_depth: int
    consumer_lag: int
    storage_bytes: int


class Rates(msgspec.Struct):
    publish_per_s: float
    deliver_per_s: float
    bytes_in_per_s: float


class Overview(msgspec.Struct):
    version: str
    node_id: int
    uptime_s: float
    data_dir: str
    fsync: str
    listeners: list[ListenerInfo]
    totals: Totals
    rates: Rates


class ClusterMember(msgspec.Struct):
    node_id: str
    broker_id: int | None  # the Kafka broker id; None for a node that never asked for one
    epoch: int  # the registration's epoch (a new one each time the node registers)
    host: str
    listeners: dict[str, int]
    started_at_ms: int
    last_heartbeat_ms: int
    lease_expires_at_ms: int  # by the database's clock, as every time here
    live: bool  # the lease is unexpired by the database's clock
    this_node: bool  # the node answering this request


class ClusterView(msgspec.Struct):
    mode: str  # "cluster" or "single-node" (then every other field is null or empty)
    node_id: str | None
    broker_id: int | None
    cluster_id: str | None
    nodes: list[ClusterMember]


class RatePoint(msgspec.Struct):
    time_ms: int
    publish_per_s: float
    deliver_per_s: float
    bytes_in_per_s: float
    consumer_lag: int


class History(msgspec.Struct):
    interval_s: float
    samples: list[RatePoint]


# --- topics -----------------------------------------------------------------------------------


class PartitionInfo(msgspec.Struct):
    partition: int
    log_start_offset: int
    high_watermark: int
    messages: int
    bytes: int


class TopicSummary(msgspec.Struct):
    name: str
    topic_id: str
    partition_count: int
    messages: int
    bytes: int
    configs: dict[str, str]
    partitions: list[PartitionInfo]


class TopicGroupLag(msgspec.Struct):
    group: str
    lag: int


class TopicDetail(TopicSummary):
    """A topic with the lag of every consumer group that committed offsets on it."""

    groups: list[TopicGroupLag]


class CreateTopic(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    partitions: int | None = None
    configs: dict[str, str] = {}


class AlterConfigs(msgspec.Struct, forbid_unknown_fields=True):
    """New values; ``null`` resets a setting to the broker default."""

    configs: dict[str, str | None]


# --- consumer groups --------------------------------------------------------------------------


class GroupSummary(msgspec.Struct):
    group: str
    state: str
    protocol_type: str
    members: int
    lag: int


class Assignment(msgspec.Struct):
    topic: str
    partitions: list[int]


class MemberInfo(msgspec.Struct):
    member_id: str
    client_id: str
    client_host: str
    assignments: list[Assignment]


class OffsetLag(msgspec.Struct):
    topic: str
    partition: int
    committed: int
    high_watermark: int
    lag: int


class GroupDetail(msgspec.Struct):
    group: str
    state: str
    protocol_type: str
    protocol: str
    members: list[MemberInfo]
    offsets: list[OffsetLag]
    lag: int


class ResetOffsets(msgspec.Struct, forbid_unknown_fields=True):
    """Where to move a group's committed offsets; only a dry run unless ``execute``."""

    to: Literal["earliest", "latest", "timestamp", "offset"]
    topic: str | None = None
    partitions: list[int] | None = None
    timestamp_ms: int | None = None
    offset: int | None = None
    execute: bool = False


class OffsetChange(msgspec.Struct):
    topic: str
    partition: int
    current: int | None
    new: int


class ResetResult(msgspec.Struct):
    group: str
    executed: bool
    changes: list[OffsetChange]


# --- queues, exchanges, bindings --------------------------------------------------------------


class QueueSummary(msgspec.Struct):
    vhost: str
    name: str
    type: str  # "classic" or "quorum" (the x-queue-type argument)
    durable: bool
    auto_delete: bool
    exclusive: bool
    arguments: dict[str, Any]
    # "recovering" after a crash until its logs are read back; its ready count is then null
    state: str
    messages: int | None
    unacked: int
    consumers: int
    published: int
    delivered: int
    acked: int
    publish_per_s: float
    deliver_per_s: float
    ack_per_s: float


class DeclareQueue(msgspec.Struct, forbid_unknown_fields=True):
    durable: bool = True
    auto_delete: bool = False
    arguments: dict[str, Any] = {}


class Purged(msgspec.Struct):
    purged: int


class ExchangeSummary(msgspec.Struct):
    vhost: str
    name: str
    type: str
    durable: bool
    auto_delete: bool
    internal: bool
    arguments: dict[str, Any]


class DeclareExchange(msgspec.Struct, forbid_unknown_fields=True):
    type: str = "direct"
    durable: bool = True
    auto_delete: bool = False
    internal: bool = False
    arguments: dict[str, Any] = {}


class BindingInfo(msgspec.Struct):
    vhost: str
    source: str
    destination: str
    destination_type: Literal["queue", "exchange"]
    routing_key: str
    arguments: dict[str, Any]


class QueueConsumer(msgspec.Struct):
    tag: str  # the consumer tag
    ack_required: bool  # false: settled on delivery (basic.consume's no-ack)
    exclusive: bool
    active: bool  # offered messages; under single-active-consumer only one consumer is


class QueueDetail(QueueSummary):
    """A queue with the bindings that route to it and the consumers attached through the
    node answering (in a cluster, ``consumers`` counts every node's, this list only its own)."""

    bindings: list[BindingInfo]
    consumer_details: list[QueueConsumer]


class Binding(msgspec.Struct, forbid_unknown_fields=True):
    source: str
    destination: str
    destination_type: Literal["queue", "exchange"] = "queue"
    routing_key: str = ""
    arguments: dict[str, Any] = {}


# --- messages ---------------------------------------------------------------------------------


class MessageProperties(msgspec.Struct, forbid_unknown_fields=True):
    """AMQP basic properties of a message published over HTTP (queues and exchanges)."""

    persistent: bool = True
    content_type: str | None = None
    content_encoding: str | None = None
    priority: int | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    expiration_ms: int | None = None
    message_id: str | None = None
    timestamp: int | None = None
    type: str | None = None
    app_id: str | None = None


class PublishMessage(msgspec.Struct, forbid_unknown_fields=True):
    """One message. ``key`` and ``partition`` apply to topics, ``routing_key`` to exchanges,
    ``properties`` to queues and exchanges."""

    value: str = ""
    encoding: Encoding = "utf8"
    key: str | None = None
    headers: dict[str, str] = {}
    partition: int | None = None
    routing_key: str = ""
    properties: MessageProperties = msgspec.field(default_factory=MessageProperties)


class Published(msgspec.Struct):
    """``routed`` false: no queue took the message; ``rejected``: a full queue refused it."""

    routed: bool
    rejected: bool = False
    partition: int | None = None
    offset: int | None = None


class Message(msgspec.Struct, omit_defaults=True):
    value: str
    encoding: Encoding
    headers: dict[str, str]
    key: str | None = None
    partition: int | None = None
    offset: int | None = None
    timestamp_ms: int | None = None
    exchange: str | None = None
    routing_key: str | None = None
    redelivered: bool | None = None
    properties: dict[str, Any] | None = None


class Messages(msgspec.Struct):
    messages: list[Message]
    next_offset: int | None = None


class GetMessages(msgspec.Struct, forbid_unknown_fields=True):
    """``ack`` false (the default) only peeks: the messages stay in the queue."""

    count: int = 1
    ack: bool = False


# --- connections ------------------------------------------------------------------------------


class ConnectionInfo(msgspec.Struct):
    """``user`` and ``vhost`` are AMQP's (null for Kafka connections); the figures are null
    where a listener does not keep them."""

    id: str
    protocol: str
    peer: str
    client_id: str
    user: str | None
    vhost: str | None
    connected_since_ms: int | None
    requests: int | None
    bytes_in: int | None
    bytes_out: int | None


class UserPermission(msgspec.Struct, forbid_unknown_fields=True):
    """What a user may do in one virtual host: regular expressions over resource names."""

    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"


class UserInfo(msgspec.Struct):
    name: str
    tags: list[str]
    loopback_only: bool
    permissions: dict[str, UserPermission]  # by virtual host


class PutUser(msgspec.Struct, forbid_unknown_fields=True):
    password: str
    tags: list[str] = []
    loopback_only: bool = False


class VhostSummary(msgspec.Struct):
    """An AMQP virtual host: its name and how many queues and exchanges it holds."""

    name: str
    queues: int
    exchanges: int
