"""ApiVersions: the first request of every client, telling it which versions to use."""

from __future__ import annotations

from typing import Any

from kio.schema.errors import ErrorCode

from wharf.protocol.kafka.responses import NO_THROTTLE, builder
from wharf.protocol.kafka.versions import SUPPORTED_VERSIONS

__all__ = ["api_versions_response"]

API_KEY = 18


def api_versions_response(api_version: int, error_code: ErrorCode) -> Any:
    """The ApiVersions response body at ``api_version`` listing every supported range.

    An unknown request version is answered at v0 with ``UNSUPPORTED_VERSION`` (the client then
    retries with the highest version listed for key 18).
    """
    build = builder(API_KEY, api_version)
    keys = tuple(
        build("ApiVersion", api_key=key, min_version=low, max_version=high)
        for key, (low, high) in sorted(SUPPORTED_VERSIONS.items())
    )
    return build(
        "ApiVersionsResponse",
        error_code=error_code,
        api_keys=keys,
        throttle_time=NO_THROTTLE,
    )
