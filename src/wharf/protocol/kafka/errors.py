"""Kafka wire errors, and the one mapping from Wharf exceptions to Kafka error codes.

Two directions meet here:

* :class:`KafkaProtocolError` and its subclasses are raised by the codec for input that cannot
  be served (bad framing, unknown API, truncated body). Each carries the Kafka ``ErrorCode``
  that describes it; the connection adapter logs it and closes the connection.
* :func:`error_code_for` turns an exception raised by ``core`` or ``storage`` while a handler
  runs into the error code put in that partition's, group's or topic's response entry.
  Handlers catch only :data:`SERVED_ERRORS` (Wharf's own errors and ``OSError``); anything else
  is a bug: it propagates to the connection adapter, which logs it with its traceback and closes
  the connection.
"""

from __future__ import annotations

import errno as errno_codes
from typing import Final

from kio.schema.errors import ErrorCode

from wharf.core.streams.errors import StreamsError
from wharf.errors import (
    AlreadyExistsError,
    BatchTooLargeError,
    CorruptBatchError,
    InvalidArgumentError,
    NotFoundError,
    OffsetOutOfRangeError,
    PreconditionError,
    ProtocolError,
    StorageError,
    WharfError,
)

__all__ = [
    "FrameTooLargeError",
    "InvalidFrameLengthError",
    "KafkaProtocolError",
    "TlsOnPlainPortError",
    "TruncatedRequestError",
    "UnknownApiKeyError",
    "SERVED_ERRORS",
    "UnsupportedVersionError",
    "error_code_for",
    "kafka_code",
]


class KafkaProtocolError(ProtocolError):
    """Input on a Kafka connection that cannot be served; ``code`` is its Kafka error code."""

    code: ErrorCode = ErrorCode.invalid_request

    def __init__(self, message: str, *, code: ErrorCode | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class InvalidFrameLengthError(KafkaProtocolError):
    """The 4-byte size prefix is negative or zero."""


class FrameTooLargeError(KafkaProtocolError):
    """The 4-byte size prefix exceeds the configured maximum request size."""


class TlsOnPlainPortError(KafkaProtocolError):
    """A TLS ClientHello arrived on the plaintext listener."""


class TruncatedRequestError(KafkaProtocolError):
    """A request body ended before its schema was complete (or held invalid values)."""

    code = ErrorCode.corrupt_message


class UnknownApiKeyError(KafkaProtocolError):
    """The request's API key is not one Wharf serves."""


class UnsupportedVersionError(KafkaProtocolError):
    """The request's API version is outside the advertised range."""

    code = ErrorCode.unsupported_version


SERVED_ERRORS: Final = (WharfError, OSError)
"""The exceptions a handler turns into a response entry's error code."""


def kafka_code(code: int) -> ErrorCode:
    """A core outcome code as a Kafka error code (the core uses Kafka's numbering)."""
    try:
        return ErrorCode(int(code))
    except ValueError:
        return ErrorCode.unknown_server_error


def error_code_for(exc: WharfError | OSError) -> ErrorCode:
    """The Kafka error code for an exception raised while serving a request.

    The core's streams errors carry their code; the other Wharf error families map by kind.
    """
    if isinstance(exc, StreamsError):
        return kafka_code(exc.code)
    if isinstance(exc, KafkaProtocolError):
        return exc.code
    if isinstance(exc, BatchTooLargeError):
        return ErrorCode.message_too_large
    if isinstance(exc, CorruptBatchError):
        return ErrorCode.corrupt_message
    if isinstance(exc, StorageError):
        return ErrorCode.kafka_storage_error
    if isinstance(exc, OffsetOutOfRangeError):
        return ErrorCode.offset_out_of_range
    if isinstance(exc, NotFoundError):
        return ErrorCode.unknown_topic_or_partition
    if isinstance(exc, AlreadyExistsError):
        return ErrorCode.topic_already_exists
    if isinstance(exc, InvalidArgumentError):
        return ErrorCode.invalid_request
    if isinstance(exc, PreconditionError):
        return ErrorCode.invalid_request
    if isinstance(exc, OSError) and exc.errno in (errno_codes.ENOSPC, errno_codes.EFBIG):
        return ErrorCode.kafka_storage_error
    return ErrorCode.unknown_server_error
