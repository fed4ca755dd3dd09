"""Error codes and exceptions of the streams half of the core.

:class:`ErrorCode` values are Kafka's wire error codes, one for one (same numbers, the same
names in upper case), so the Kafka front end maps them without a table; the core itself stays
protocol-neutral and only uses the names. A test pins every value against the Kafka schema
library. Operations whose Kafka responses carry per-item results (group membership, offset
commits) return codes in their result objects; the rest raise a :class:`StreamsError` subclass
whose ``code`` says what to put on the wire::

    BrokerError
    └── StreamsError (code)
        ├── UnknownTopicError         also NotFoundError        UNKNOWN_TOPIC_OR_PARTITION
        ├── TopicExistsError          also AlreadyExistsError   TOPIC_ALREADY_EXISTS
        ├── InvalidTopicError         also InvalidArgumentError INVALID_TOPIC_EXCEPTION
        ├── InvalidConfigError        also InvalidArgumentError INVALID_CONFIG
        ├── InvalidPartitionsError    also InvalidArgumentError INVALID_PARTITIONS
        ├── ProducerStateError        OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH,
        │                             UNKNOWN_PRODUCER_ID (``code`` tells which)
        └── NotCoordinatorError       NOT_COORDINATOR: in a cluster, another node coordinates
                                      the group (or this node's authority over it ended)
"""

from __future__ import annotations

from enum import IntEnum

from wharf.errors import AlreadyExistsError, BrokerError, InvalidArgumentError, NotFoundError

__all__ = [
    "ErrorCode",
    "InvalidConfigError",
    "InvalidPartitionsError",
    "InvalidTopicError",
    "NotCoordinatorError",
    "ProducerStateError",
    "StreamsError",
    "TopicExistsError",
    "UnknownTopicError",
]


class ErrorCode(IntEnum):
    """Outcome codes; each value equals Kafka's error code of the same name."""

    UNKNOWN_SERVER_ERROR = -1
    NONE = 0
    OFFSET_OUT_OF_RANGE = 1
    CORRUPT_MESSAGE = 2
    UNKNOWN_TOPIC_OR_PARTITION = 3
    NOT_LEADER_OR_FOLLOWER = 6
    MESSAGE_TOO_LARGE = 10
    OFFSET_METADATA_TOO_LARGE = 12
    COORDINATOR_NOT_AVAILABLE = 15
    NOT_COORDINATOR = 16
    INVALID_TOPIC_EXCEPTION = 17
    RECORD_LIST_TOO_LARGE = 18
    ILLEGAL_GENERATION = 22
    INCONSISTENT_GROUP_PROTOCOL = 23
    INVALID_GROUP_ID = 24
    UNKNOWN_MEMBER_ID = 25
    INVALID_SESSION_TIMEOUT = 26
    REBALANCE_IN_PROGRESS = 27
    INVALID_TIMESTAMP = 32
    TOPIC_ALREADY_EXISTS = 36
    INVALID_PARTITIONS = 37
    INVALID_REPLICATION_FACTOR = 38
    INVALID_CONFIG = 40
    NOT_CONTROLLER = 41
    INVALID_REQUEST = 42
    POLICY_VIOLATION = 44
    OUT_OF_ORDER_SEQUENCE_NUMBER = 45
    DUPLICATE_SEQUENCE_NUMBER = 46
    INVALID_PRODUCER_EPOCH = 47
    INVALID_PRODUCER_ID_MAPPING = 49
    KAFKA_STORAGE_ERROR = 56
    UNKNOWN_PRODUCER_ID = 59
    NON_EMPTY_GROUP = 68
    GROUP_ID_NOT_FOUND = 69
    MEMBER_ID_REQUIRED = 79
    FENCED_INSTANCE_ID = 82
    GROUP_SUBSCRIBED_TO_TOPIC = 86
    INVALID_RECORD = 87


class StreamsError(BrokerError):
    """A refused streams request; ``code`` is the matching :class:`ErrorCode`."""

    default_code = ErrorCode.UNKNOWN_SERVER_ERROR

    def __init__(self, message: str, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        self.code = code if code is not None else self.default_code


class UnknownTopicError(StreamsError, NotFoundError):
    default_code = ErrorCode.UNKNOWN_TOPIC_OR_PARTITION


class TopicExistsError(StreamsError, AlreadyExistsError):
    default_code = ErrorCode.TOPIC_ALREADY_EXISTS


class InvalidTopicError(StreamsError, InvalidArgumentError):
    default_code = ErrorCode.INVALID_TOPIC_EXCEPTION


class InvalidConfigError(StreamsError, InvalidArgumentError):
    default_code = ErrorCode.INVALID_CONFIG


class InvalidPartitionsError(StreamsError, InvalidArgumentError):
    default_code = ErrorCode.INVALID_PARTITIONS


class ProducerStateError(StreamsError):
    default_code = ErrorCode.OUT_OF_ORDER_SEQUENCE_NUMBER


class NotCoordinatorError(StreamsError):
    default_code = ErrorCode.NOT_COORDINATOR
