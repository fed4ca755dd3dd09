"""Routes each decoded Kafka request to its handler.

``handle(ctx, request)`` returns the ``kio`` response payload to send, or ``None`` when the
request expects no response (Produce with ``acks=0``). Every API in
:data:`~wharf.protocol.kafka.versions.SUPPORTED_VERSIONS` has an entry in ``HANDLERS``;
``tests/protocol/kafka/test_versions.py`` keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Final

from kio.schema.errors import ErrorCode

from wharf.protocol.kafka import (
    handlers_admin,
    handlers_configs,
    handlers_fetch,
    handlers_groups,
    handlers_metadata,
    handlers_offsets,
    handlers_produce,
    handlers_sasl,
)
from wharf.protocol.kafka.codec import ApiVersionsFallback, KafkaRequest
from wharf.protocol.kafka.context import KafkaContext
from wharf.protocol.kafka.handlers_api_versions import api_versions_response

__all__ = ["HANDLERS", "handle", "handle_fallback"]

Handler = Callable[[KafkaContext, KafkaRequest], Awaitable[Any]]


async def _api_versions(ctx: KafkaContext, request: KafkaRequest) -> Any:
    return api_versions_response(request.api_version, ErrorCode.none)


HANDLERS: Final[dict[int, Handler]] = {
    0: handlers_produce.produce,
    1: handlers_fetch.fetch,
    2: handlers_offsets.list_offsets,
    3: handlers_metadata.metadata,
    8: handlers_groups.offset_commit,
    9: handlers_groups.offset_fetch,
    10: handlers_groups.find_coordinator,
    11: handlers_groups.join_group,
    12: handlers_groups.heartbeat,
    13: handlers_groups.leave_group,
    14: handlers_groups.sync_group,
    15: handlers_groups.describe_groups,
    16: handlers_groups.list_groups,
    17: handlers_sasl.sasl_handshake,
    18: _api_versions,
    19: handlers_admin.create_topics,
    20: handlers_admin.delete_topics,
    21: handlers_offsets.delete_records,
    22: handlers_produce.init_producer_id,
    36: handlers_sasl.sasl_authenticate,
    32: handlers_configs.describe_configs,
    33: handlers_configs.alter_configs,
    37: handlers_admin.create_partitions,
    42: handlers_groups.delete_groups,
    44: handlers_configs.incremental_alter_configs,
    47: handlers_groups.offset_delete,
    60: handlers_metadata.describe_cluster,
}


async def handle(ctx: KafkaContext, request: KafkaRequest) -> Any:
    """Serve one request; ``None`` means no response is sent. Raises KafkaProtocolError for a
    request that needs SASL authentication first (the connection is then closed)."""
    handlers_sasl.refuse_before_auth(ctx, request)
    return await HANDLERS[request.api_key](ctx, request)


def handle_fallback(event: ApiVersionsFallback) -> Any:
    """Answer an ApiVersions request of an unknown version (v0 body, UNSUPPORTED_VERSION)."""
    return api_versions_response(0, ErrorCode.unsupported_version)
