"""The API keys and version ranges Wharf serves, advertised in ApiVersions.

Only what the handlers implement is listed: librdkafka calls every API a broker advertises, and
clients pick the highest version both sides know, so an entry here is a promise. Every range lies
inside what the ``kio`` schemas cover; ``tests/protocol/kafka/test_versions.py`` checks that.
"""

from __future__ import annotations

from typing import Final

__all__ = ["SUPPORTED_VERSIONS", "is_supported"]

SUPPORTED_VERSIONS: Final[dict[int, tuple[int, int]]] = {
    0: (3, 9),  # Produce
    1: (4, 12),  # Fetch (v13+ address topics by id)
    2: (1, 7),  # ListOffsets (v7: timestamp -3, the record with the largest timestamp)
    3: (0, 12),  # Metadata
    8: (2, 8),  # OffsetCommit
    9: (1, 8),  # OffsetFetch (v8: several groups per request)
    10: (0, 4),  # FindCoordinator (v4: several keys per request)
    11: (0, 9),  # JoinGroup
    12: (0, 4),  # Heartbeat
    13: (0, 5),  # LeaveGroup
    14: (0, 5),  # SyncGroup
    15: (0, 5),  # DescribeGroups
    16: (0, 4),  # ListGroups
    17: (1, 1),  # SaslHandshake (v0 sends SASL tokens outside Kafka framing: not served)
    18: (0, 4),  # ApiVersions
    19: (2, 7),  # CreateTopics
    20: (1, 6),  # DeleteTopics
    21: (0, 2),  # DeleteRecords
    22: (0, 4),  # InitProducerId
    32: (1, 4),  # DescribeConfigs
    33: (0, 2),  # AlterConfigs
    36: (0, 2),  # SaslAuthenticate
    37: (0, 3),  # CreatePartitions
    42: (0, 2),  # DeleteGroups
    44: (0, 1),  # IncrementalAlterConfigs
    47: (0, 0),  # OffsetDelete
    60: (0, 1),  # DescribeCluster
}


def is_supported(api_key: int, api_version: int) -> bool:
    """Whether Wharf serves this API at this version."""
    bounds = SUPPORTED_VERSIONS.get(api_key)
    return bounds is not None and bounds[0] <= api_version <= bounds[1]
