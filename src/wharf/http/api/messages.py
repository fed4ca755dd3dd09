"""Publishing and browsing messages: topics (append, read from an offset) and queues (publish
through an exchange, peek without removing, get with removal only when asked)."""

from __future__ import annotations

from aiohttp import web

from wharf.core.broker import Broker
from wharf.core.queues.entry import QueueEntry
from wharf.core.queues.message import Message as AmqpMessage
from wharf.core.streams.partitioner import RoundRobin, key_partition
from wharf.errors import InvalidArgumentError, OffsetOutOfRangeError
from wharf.http.api.queues import VHOST, vhost_of
from wharf.http.context import context_of
from wharf.http.routing import (
    Endpoint,
    Param,
    json_response,
    path_int,
    query_int,
    read_body,
)
from wharf.http.schemas import GetMessages, Message, Messages, Published, PublishMessage
from wharf.http.views import broker as view
from wharf.http.views.payloads import amqp_headers, from_text, kafka_headers, to_text
from wharf.storage.record_batch import RecordInput

MAX_BROWSE = 1000
MAX_WAIT_MS = 30_000

_round_robin = RoundRobin()


# ------------------------------------------------------------------------------- topics


async def _publish_to_topic(request: web.Request) -> web.StreamResponse:
    broker = context_of(request).broker
    name = request.match_info["name"]
    spec = await read_body(request, PublishMessage)
    topic = broker.topics.get(name)
    count = len(topic.partitions)
    key = None if spec.key is None else spec.key.encode("utf-8")
    if spec.partition is not None:
        index = spec.partition
    elif key is not None:
        index = key_partition(key, count)
    else:
        index = _round_robin.next(count)
    partition = view.partition(broker, name, index)
    record = RecordInput(
        key=key,
        value=from_text(spec.value, spec.encoding),
        headers=[(k, v.encode("utf-8")) for k, v in spec.headers.items()],
    )
    result = await partition.append_records([record], now_ms=broker.clock.now_ms())
    return json_response(
        Published(routed=True, partition=index, offset=result.base_offset), status=201
    )


async def _read_topic(request: web.Request) -> web.StreamResponse:
    broker = context_of(request).broker
    name = request.match_info["name"]
    partition = view.partition(broker, name, path_int(request, "partition"))
    limit = query_int(request, "limit", 20) or 20
    if not 1 <= limit <= MAX_BROWSE:
        raise InvalidArgumentError(f"limit must be between 1 and {MAX_BROWSE}")
    wait_ms = query_int(request, "wait_ms", 0) or 0
    if not 0 <= wait_ms <= MAX_WAIT_MS:
        raise InvalidArgumentError(f"wait_ms must be between 0 and {MAX_WAIT_MS}")
    start = query_int(request, "offset")
    offset = partition.log_start_offset if start is None else start
    if offset < 0:
        raise InvalidArgumentError("offset must not be negative")
    offset = max(offset, partition.log_start_offset)  # retention may have moved the start
    if offset > partition.log_end_offset:
        raise OffsetOutOfRangeError(
            f"offset {offset} is past the end ({partition.log_end_offset}) of {name}-"
            f"{partition.index}"
        )
    if wait_ms and offset >= partition.high_watermark:
        await partition.wait_for_data(offset, wait_ms / 1000)
    records = await partition.fetch_records(offset, limit)
    messages = []
    for record in records:
        value, encoding = to_text(record.value or b"")
        messages.append(
            Message(
                value=value,
                encoding=encoding,
                headers=kafka_headers(record.headers),
                key=None if record.key is None else to_text(record.key)[0],
                partition=partition.index,
                offset=record.offset,
                timestamp_ms=record.timestamp_ms,
            )
        )
    next_offset = records[-1].offset + 1 if records else offset
    return json_response(Messages(messages=messages, next_offset=next_offset))


# ------------------------------------------------------------------------------- queues


def _amqp_message(exchange: str, routing_key: str, spec: PublishMessage) -> AmqpMessage:
    props = spec.properties
    return AmqpMessage.build(
        exchange,
        routing_key,
        from_text(spec.value, spec.encoding),
        headers=spec.headers or None,
        persistent=props.persistent,
        priority=props.priority,
        expiration_ms=props.expiration_ms,
        content_type=props.content_type,
        content_encoding=props.content_encoding,
        correlation_id=props.correlation_id,
        reply_to=props.reply_to,
        message_id=props.message_id,
        timestamp=props.timestamp,
        type=props.type,
        app_id=props.app_id,
    )


async def _publish(broker: Broker, vhost: str, message: AmqpMessage) -> web.StreamResponse:
    result = await view.vhost(broker, vhost).publish(message)
    return json_response(
        Published(routed=result.routed and not result.rejected, rejected=result.rejected),
        status=201,
    )


async def _publish_to_queue(request: web.Request) -> web.StreamResponse:
    broker = context_of(request).broker
    vhost = vhost_of(request)
    name = request.match_info["name"]
    view.queue(broker, vhost, name)  # 404 rather than a silently unroutable message
    spec = await read_body(request, PublishMessage)
    return await _publish(broker, vhost, _amqp_message("", name, spec))


async def _publish_to_exchange(request: web.Request) -> web.StreamResponse:
    broker = context_of(request).broker
    vhost = vhost_of(request)
    name = request.match_info["name"]
    view.vhost(broker, vhost).get_exchange(name)
    spec = await read_body(request, PublishMessage)
    return await _publish(broker, vhost, _amqp_message(name, spec.routing_key, spec))


def _queue_message(
    message: AmqpMessage, position: int, redelivered: bool, delivery_count: int
) -> Message:
    value, encoding = to_text(message.body)
    properties: dict[str, object] = {
        "persistent": message.persistent,
        "priority": message.priority,
        "delivery_count": delivery_count,
    }
    if message.expiration_text is not None:
        properties["expiration"] = message.expiration_text
    return Message(
        value=value,
        encoding=encoding,
        headers=amqp_headers(message.headers),
        offset=position,
        exchange=message.exchange,
        routing_key=message.routing_key,
        redelivered=redelivered,
        properties=properties,
    )


def _peeked(entry: QueueEntry, position: int) -> Message:
    return _queue_message(entry.message, position, entry.delivery_count > 0, entry.delivery_count)


async def _get_from_queue(request: web.Request) -> web.StreamResponse:
    broker = context_of(request).broker
    vhost = vhost_of(request)
    name = request.match_info["name"]
    spec = await read_body(request, GetMessages)
    if not 1 <= spec.count <= MAX_BROWSE:
        raise InvalidArgumentError(f"count must be between 1 and {MAX_BROWSE}")
    if not spec.ack:
        browsed = view.queue(broker, vhost, name)
        await browsed.store.load()  # closed logs open on the fsync pool, not in the reads
        entries = browsed.peek(spec.count)
        return json_response(Messages(messages=[_peeked(e, i) for i, e in enumerate(entries)]))
    queue = view.vhost(broker, vhost).get_queue(name)  # exclusive queues: 423
    await queue.store.load()
    taken: list[Message] = []
    for position in range(spec.count):
        delivery = queue.basic_get(no_ack=True)
        if delivery is None:
            break
        taken.append(
            _queue_message(
                delivery.message, position, delivery.redelivered, delivery.delivery_count
            )
        )
    return json_response(Messages(messages=taken))


ENDPOINTS = [
    Endpoint(
        "POST",
        "/api/topics/{name}/messages",
        _publish_to_topic,
        "Append one record (partition from 'partition', else the key's hash, else round "
        "robin); answers once durable under --fsync always",
        "messages",
        body=PublishMessage,
        response=Published,
        status=201,
    ),
    Endpoint(
        "GET",
        "/api/topics/{name}/partitions/{partition}/messages",
        _read_topic,
        "Read records of a partition from an offset (nothing is consumed)",
        "messages",
        response=Messages,
        query=(
            Param("offset", "integer", "First offset (default: log start)"),
            Param("limit", "integer", "At most this many records (1-1000, default 20)"),
            Param(
                "wait_ms",
                "integer",
                "Wait up to this long for new data when at the end (0-30000, default 0)",
            ),
        ),
    ),
    Endpoint(
        "POST",
        "/api/queues/{name}/messages",
        _publish_to_queue,
        "Publish to a queue through the default exchange",
        "messages",
        body=PublishMessage,
        response=Published,
        status=201,
        query=(VHOST,),
    ),
    Endpoint(
        "POST",
        "/api/exchanges/{name}/messages",
        _publish_to_exchange,
        "Publish to an exchange with a routing key",
        "messages",
        body=PublishMessage,
        response=Published,
        status=201,
        query=(VHOST,),
    ),
    Endpoint(
        "POST",
        "/api/queues/{name}/get",
        _get_from_queue,
        "Peek at ready messages (ack false, the default: they stay) or take them "
        "(ack true: removed)",
        "messages",
        body=GetMessages,
        response=Messages,
        query=(VHOST,),
    ),
]
