"""The one exception root of Wharf.

Every error Wharf raises on purpose derives from :class:`WharfError`. Each layer adds its own
branch; the protocol branches carry their wire code so that one place per connection can turn
any exception into the right response::

    WharfError
    ├── StorageError                 storage/: I/O failure, disk full (errno kept)
    │   └── CorruptBatchError        a batch failed header/CRC validation
    │       └── BatchTooLargeError   a batch above the log's size limit (max.message.bytes)
    ├── BrokerError                  core/: a request the broker model refuses
    │   ├── NotFoundError            topic, queue, exchange, group absent
    │   ├── AlreadyExistsError
    │   ├── PreconditionError        redeclare with other arguments, non-empty delete, ...
    │   ├── ResourceLockedError      exclusive queue owned by another connection
    │   ├── AccessRefusedError       permissions, reserved names, exclusive consumers
    │   └── InvalidArgumentError     a value out of range or of the wrong type
    └── ProtocolError                protocol/: malformed or unsupported input on the wire
        (subclassed in protocol.kafka.errors and protocol.amqp.errors with wire codes)

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


class ProtocolError(WharfError):
    """Malformed or unsupported input on the wire."""
