"""The one exception root of Wharf, and the whole tree that grows from it.

Every error Wharf raises on purpose derives from :class:`WharfError`. Each layer adds its own
branch; the protocol branches carry their wire code so that one place per connection can turn
any exception into the right response (``protocol/kafka/errors.py`` maps the rest to Kafka
error codes, ``protocol/amqp/errors.py`` to AMQP reply codes). Anything that is not a
``WharfError`` (or an ``OSError`` from the disk) is a bug: the connection logs it with its
traceback and closes. The tree, with the module of each class (``tests/test_errors.py`` checks
that it matches the code)::

    WharfError                          errors
    ├── StorageError                    errors                 I/O failure, disk full (errno kept)
    │   ├── CorruptBatchError           errors                 bad magic, length or CRC
    │   │   └── BatchTooLargeError      errors                 over max.message.bytes
    │   ├── DatabaseError               cluster.database       the catalogue: names it and why
    │   │   ├── SchemaVersionError      cluster.migrations     schema newer than the code
    │   │   ├── LeaseLostError          cluster.nodes          a node's lease expired or replaced
    │   │   └── GroupMovedError         cluster.groups         another node coordinates the group
    │   ├── ObjectStoreError            cluster.objectstore    S3 refused, silent, or misconfigured
    │   │   └── ObjectNotFoundError     cluster.objectstore    no object of that key
    │   └── CorruptObjectError          cluster.streams.objects  intake object does not parse
    ├── BrokerError                     errors                 a request the core refuses
    │   ├── NotFoundError               errors                 topic, queue, exchange, group...
    │   ├── AlreadyExistsError          errors
    │   ├── PreconditionError           errors                 other arguments, non-empty delete
    │   │   ├── InvalidQueueArgumentError  core.queues.args    also InvalidArgumentError
    │   │   └── RefusedAtCommitError    core.queues.router     a full queue refused at commit
    │   ├── ResourceLockedError         errors                 owned by someone else
    │   │   └── DataDirInUseError       core.data_dir_lock     another broker holds the data dir
    │   ├── AccessRefusedError          errors                 permissions, reserved names
    │   ├── InvalidArgumentError        errors                 out of range, wrong type
    │   │   ├── OffsetOutOfRangeError   errors                 before the log start, past the end
    │   │   ├── MalformedPropertiesError  core.queues.properties  AMQP basic properties
    │   │   └── UnknownExchangeTypeError  core.queues.exchanges  AMQP exchange type
    │   └── StreamsError                core.streams.errors    carries a Kafka error code
    │       ├── UnknownTopicError       core.streams.errors    also NotFoundError
    │       ├── TopicExistsError        core.streams.errors    also AlreadyExistsError
    │       ├── InvalidTopicError       core.streams.errors    also InvalidArgumentError
    │       ├── InvalidConfigError      core.streams.errors    also InvalidArgumentError
    │       ├── InvalidPartitionsError  core.streams.errors    also InvalidArgumentError
    │       ├── ProducerStateError      core.streams.errors    sequence, epoch, unknown producer
    │       └── NotCoordinatorError     core.streams.errors    another node coordinates the group
    ├── ProtocolError                   errors                 malformed input on the wire
    │   ├── KafkaProtocolError          protocol.kafka.errors  carries a Kafka error code
    │   │   ├── InvalidFrameLengthError   protocol.kafka.errors
    │   │   ├── FrameTooLargeError        protocol.kafka.errors
    │   │   ├── TlsOnPlainPortError       protocol.kafka.errors
    │   │   ├── TruncatedRequestError     protocol.kafka.errors
    │   │   ├── UnknownApiKeyError        protocol.kafka.errors
    │   │   └── UnsupportedVersionError   protocol.kafka.errors
    │   └── AMQPError                   protocol.amqp.errors   carries an AMQP reply code
    │       ├── AMQPChannelError        protocol.amqp.errors   closes the channel
    │       └── AMQPConnectionError     protocol.amqp.errors   closes the connection
    │           └── BadProtocolHeader   protocol.amqp.errors
    ├── SettingsError                   server.settings        flags, environment, TOML
    └── StartupError                    server.app             a listener could not start

This module sits outside the layers: every layer may import it.
"""

from __future__ import annotations

__all__ = [
    "AccessRefusedError",
    "AlreadyExistsError",
    "BatchTooLargeError",
    "BrokerError",
    "CorruptBatchError",
    "InvalidArgumentError",
    "NotFoundError",
    "OffsetOutOfRangeError",
    "PreconditionError",
    "ProtocolError",
    "ResourceLockedError",
    "StorageError",
    "WharfError",
]


class WharfError(Exception):
    """Root of every error Wharf raises on purpose."""


class StorageError(WharfError):
    """A storage operation failed; the log is left consistent.

    ``errno`` is the operating system's error number when the cause was an ``OSError``
    (for example ``errno.ENOSPC`` or ``errno.EFBIG`` when the disk or file size limit is hit).
    """

    def __init__(self, message: str, *, errno: int | None = None) -> None:
        super().__init__(message)
        self.errno = errno


class CorruptBatchError(StorageError):
    """A record batch failed validation (bad magic, length or CRC)."""


class BatchTooLargeError(CorruptBatchError):
    """A record batch is larger than the log takes (its ``max_batch_bytes``)."""


class BrokerError(WharfError):
    """The broker model refuses a request."""


class NotFoundError(BrokerError):
    """The named object does not exist."""


class AlreadyExistsError(BrokerError):
    """An object with that name exists already."""


class PreconditionError(BrokerError):
    """The request conflicts with the object's current state or arguments."""


class ResourceLockedError(BrokerError):
    """The object is exclusively owned by someone else."""


class AccessRefusedError(BrokerError):
    """Not permitted: a user's permissions, a reserved name, a queue in exclusive use."""


class InvalidArgumentError(BrokerError):
    """An argument is out of range or of the wrong type."""


class OffsetOutOfRangeError(InvalidArgumentError):
    """An offset before a log's start or past its end: raised by storage reads and by the
    streams core alike (Kafka's OFFSET_OUT_OF_RANGE)."""


class ProtocolError(WharfError):
    """Malformed or unsupported input on the wire."""
