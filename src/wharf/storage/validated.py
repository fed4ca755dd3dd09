"""The batches of one append, parsed and validated once.

How it works. A produce request carries one or more RecordBatch v2 batches back to back.
:func:`validate_batches` walks them once: it unpacks each 61-byte header, checks it (magic,
lengths, the size limit, offsets) and the batch's CRC-32C, and returns a
:class:`ValidatedBatches`: the bytes, each batch's :class:`~wharf.storage.record_batch.BatchHeader`
(the base offset field is the producer's slot, replaced on append), where each batch starts, and
what the log needs to place them (total bytes, offsets taken, largest timestamp, record count).
That value flows from the partition's checks (sizes, producer sequences) to
:meth:`Log.append_validated <wharf.storage.log.Log.append_validated>`, so no header is read twice
and every limit is refused by one error with one message (:class:`~wharf.errors.CorruptBatchError`,
:class:`~wharf.errors.BatchTooLargeError` for the size limit).

:meth:`ValidatedBatches.with_log_append_time` stamps a copy for topics with
``message.timestamp.type=LogAppendTime`` (attributes, max timestamp and CRC rewritten, the records
untouched); it starts from validated batches, so a corrupt batch is never given a valid CRC.
"""

from __future__ import annotations

import struct

import crc32c

from wharf.errors import CorruptBatchError
from wharf.storage.record_batch import (
    ATTRIBUTES_AT,
    CRC_FIELD,
    CRC_START,
    HEADER,
    HEADER_SIZE,
    LOG_OVERHEAD,
    MAGIC,
    MAX_TIMESTAMP_AT,
    MIN_BATCH_LENGTH,
    TIMESTAMP_TYPE_BIT,
    BatchHeader,
    validate_batch,
)

__all__ = ["ValidatedBatches", "validate_batches"]

_unpack_header = HEADER.unpack_from
_crc32c = crc32c.crc32c
_new_tuple = tuple.__new__
_ATTRIBUTES = struct.Struct(">h")
_TIMESTAMP = struct.Struct(">q")


class ValidatedBatches:
    """Batches that passed :func:`validate_batches`; see the module docstring.

    ``positions[i]`` is where ``headers[i]``'s batch starts in ``view``; ``size`` is the total
    byte count, ``offsets`` the offsets the batches take, ``max_timestamp`` the largest batch
    max timestamp and ``records`` the record count.
    """

    __slots__ = ("view", "headers", "positions", "size", "offsets", "max_timestamp", "records")

    def __init__(
        self,
        view: memoryview,
        headers: list[BatchHeader],
        positions: list[int],
        offsets: int,
        max_timestamp: int,
        records: int,
    ) -> None:
        self.view = view
        self.headers = headers
        self.positions = positions
        self.size = len(view)
        self.offsets = offsets
        self.max_timestamp = max_timestamp
        self.records = records

    def with_log_append_time(self, now_ms: int) -> ValidatedBatches:
        """A copy in which every batch has timestamp type LogAppendTime and ``now_ms`` as its
        max timestamp, its CRC computed anew (readers of such a batch take its max timestamp
        as every record's)."""
        out = bytearray(self.view)
        stamped = memoryview(out)
        headers: list[BatchHeader] = []
        for pos, header in zip(self.positions, self.headers, strict=True):
            _ATTRIBUTES.pack_into(out, pos + ATTRIBUTES_AT, header.attributes | TIMESTAMP_TYPE_BIT)
            _TIMESTAMP.pack_into(out, pos + MAX_TIMESTAMP_AT, now_ms)
            crc = _crc32c(stamped[pos + CRC_START : pos + header.batch_length + LOG_OVERHEAD])
            CRC_FIELD.pack_into(out, pos + CRC_START - CRC_FIELD.size, crc)
            headers.append(_new_tuple(BatchHeader, _unpack_header(out, pos)))
        return ValidatedBatches(
            stamped, headers, self.positions, self.offsets, now_ms, self.records
        )


def validate_batches(
    data: bytes | bytearray | memoryview, max_batch_bytes: int
) -> ValidatedBatches:
    """Validate every batch of an append: complete, back to back, nothing trailing, none above
    ``max_batch_bytes``, each with a good CRC.

    Raises :class:`~wharf.errors.BatchTooLargeError` for a batch above the limit and
    :class:`~wharf.errors.CorruptBatchError` (with the precise reason) for any other fault.
    """
    view = memoryview(data)
    n = len(view)
    if n == 0:
        raise CorruptBatchError("empty append: no batch given")
    headers: list[BatchHeader] = []
    positions: list[int] = []
    offsets = 0
    max_ts = -1
    records = 0
    pos = 0
    while pos < n:
        if n - pos < HEADER_SIZE:
            validate_batch(view, pos, max_batch_bytes=max_batch_bytes)  # raises: too short
        header: BatchHeader = _new_tuple(BatchHeader, _unpack_header(view, pos))
        length = header.batch_length
        size = length + LOG_OVERHEAD
        if (
            header.magic != MAGIC
            or length < MIN_BATCH_LENGTH
            or size > max_batch_bytes
            or size > n - pos
            or header.last_offset_delta < 0
            or header.records_count < 0
            or _crc32c(view[pos + CRC_START : pos + size]) != header.crc
        ):
            validate_batch(view, pos, max_batch_bytes=max_batch_bytes)  # raises: says why
        headers.append(header)
        positions.append(pos)
        offsets += header.last_offset_delta + 1
        if header.max_timestamp > max_ts:
            max_ts = header.max_timestamp
        records += header.records_count
        pos += size
    return ValidatedBatches(view, headers, positions, offsets, max_ts, records)
