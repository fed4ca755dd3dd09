"""Routes each decoded Kafka request to its handler.

``handle(ctx, request)`` returns the ``kio`` response payload to send, or ``None`` when the
request expects no response (Produce with ``acks=0``). Every API in
:data:`~wharf.protocol.kafka.versions.SUPPORTED_VERSIONS` has an entry in ``HANDLERS``;
``tests/protocol/kafka/test_kafka_versions.py`` keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from kio.schema.errors import ErrorCode

from wharf.protocol.kafka.codec import ApiVersionsFallback, KafkaRequest
from wharf.protocol.kafka.context import KafkaContext
from wharf.protocol.kafka.handlers import (
    admin,
    configs,
    fetch,
    groups,
    metadata,
    offsets,
    produce,
    sasl,
)
from wharf.protocol.kafka.handlers.api_versions import api_versions_response

__all__ = ["HANDLERS", "handle", "handle_fallback"]

Handler = Callable[[KafkaContext, KafkaRequest], Awaitable[Any]]


async def _api_versions(ctx: KafkaContext, request: KafkaRequest) -> Any:
    return api_versions_response(request.api_version, ErrorCode.none)


HANDLERS: Final[dict[int, Handler]] = {
    0: produce.produce,
    1: fetch.fetch,
    2: offsets.list_offsets,
    3: metadata.metadata,
    8: groups.offset_commit,
    9: groups.offset_fetch,
    10: groups.find_coordinator,
    11: groups.join_group,
    12: groups.heartbeat,
    13: groups.leave_group,
    14: groups.sync_group,
    15: groups.describe_groups,
    16: groups.list_groups,
    17: sasl.sasl_handshake,
    18: _api_versions,
    19: admin.create_topics,
    20: admin.delete_topics,
    21: offsets.delete_records,
    22: produce.init_producer_id,
    36: sasl.sasl_authenticate,
    32: configs.describe_configs,
    33: configs.alter_configs,
    37: admin.create_partitions,
    42: groups.delete_groups,
    44: configs.incremental_alter_configs,
    47: groups.offset_delete,
    60: metadata.describe_cluster,
}


async def handle(ctx: KafkaContext, request: KafkaRequest) -> Any:
    """Serve one request; ``None`` means no response is sent. Raises KafkaProtocolError for a
    request that needs SASL authentication first (the connection is then closed)."""
    sasl.refuse_before_auth(ctx, request)
    return await HANDLERS[request.api_key](ctx, request)


def handle_fallback(event: ApiVersionsFallback) -> Any:
    """Answer an ApiVersions request of an unknown version (v0 body, UNSUPPORTED_VERSION)."""
    return api_versions_response(0, ErrorCode.unsupported_version)
