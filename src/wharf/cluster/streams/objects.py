"""The intake object: one flush's batches, as one object in the store, readable without the
database.

Layout (all integers big-endian)::

    sections    the batches of each partition back to back, partition after partition,
                each batch exactly as the producer sent it
    footer      u32 section count, then per section: topic id (16 bytes), partition (i32),
                start (u64), length (u32), record count (i32)
    trailer     footer length (u32), CRC-32C of the footer (u32), magic b"WHI1"

Sections tile the data part exactly: the first starts at 0, each starts where the one before
it ended, the last ends where the footer begins. :func:`decode_footer` checks all of that (and
the CRC), so a truncated object, trailing bytes or a footer written for other data are refused
with :class:`CorruptObjectError` rather than misread. The batches themselves carry their own
CRCs; the footer only says where each partition's run is, so that the index can be rebuilt
from the store alone.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import crc32c

from wharf.errors import StorageError

__all__ = [
    "MAGIC",
    "CorruptObjectError",
    "PartitionRun",
    "Section",
    "decode_footer",
    "encode_footer",
    "encode_object",
    "intake_key",
]

MAGIC = b"WHI1"
_COUNT = struct.Struct(">I")
_SECTION = struct.Struct(">16siQIi")
_TRAILER = struct.Struct(">II4s")


class CorruptObjectError(StorageError):
    """An intake object whose footer is missing, damaged or does not fit its data."""


@dataclass(frozen=True, slots=True)
class PartitionRun:
    """What goes into one section: a partition's chunks of batches, in arrival order."""

    topic_id: uuid.UUID
    partition: int
    chunks: Sequence[bytes | bytearray | memoryview]
    records: int


@dataclass(frozen=True, slots=True)
class Section:
    """Where one partition's batches lie in an intake object."""

    topic_id: uuid.UUID
    partition: int
    start: int
    length: int
    records: int


def intake_key(node_id: str, flush_id: uuid.UUID) -> str:
    """The object key of a flush: ``intake/<node id>/<flush id>``."""
    return f"intake/{node_id}/{flush_id}"


def encode_object(runs: Sequence[PartitionRun]) -> tuple[bytes, list[list[int]]]:
    """The object holding ``runs`` in the order given, and where each run's chunks start
    (``starts[i][j]`` is the offset of chunk ``j`` of run ``i``)."""
    out = bytearray()
    starts: list[list[int]] = []
    sections = []
    for run in runs:
        begin = len(out)
        positions = []
        for chunk in run.chunks:
            positions.append(len(out))
            out += chunk
        starts.append(positions)
        sections.append(Section(run.topic_id, run.partition, begin, len(out) - begin, run.records))
    out += encode_footer(sections)
    return bytes(out), starts


def encode_footer(sections: Sequence[Section]) -> bytes:
    """What follows an object's sections (laid out back to back from its start): their
    table, and the trailer that finds and checks it."""
    footer = bytearray(_COUNT.pack(len(sections)))
    for section in sections:
        footer += _SECTION.pack(
            section.topic_id.bytes, section.partition, section.start, section.length,
            section.records,
        )  # fmt: skip
    footer += _TRAILER.pack(len(footer), crc32c.crc32c(footer), MAGIC)
    return bytes(footer)


def decode_footer(data: bytes | bytearray | memoryview) -> list[Section]:
    """The sections of a whole intake object; :class:`CorruptObjectError` says what is wrong
    when it is not one."""
    view = memoryview(data)
    if len(view) < _TRAILER.size + _COUNT.size:
        raise CorruptObjectError(f"intake object of {len(view)} bytes is too short for a footer")
    footer_length, crc, magic = _TRAILER.unpack_from(view, len(view) - _TRAILER.size)
    if magic != MAGIC:
        raise CorruptObjectError(f"intake object does not end with {MAGIC!r} (found {magic!r})")
    data_end = len(view) - _TRAILER.size - footer_length
    if footer_length < _COUNT.size or data_end < 0:
        raise CorruptObjectError(
            f"intake object footer length {footer_length} does not fit its {len(view)} bytes"
        )
    footer = view[data_end : len(view) - _TRAILER.size]
    if crc32c.crc32c(footer) != crc:
        raise CorruptObjectError("intake object footer fails its CRC")
    (count,) = _COUNT.unpack_from(footer, 0)
    if footer_length != _COUNT.size + count * _SECTION.size:
        raise CorruptObjectError(
            f"intake object footer of {footer_length} bytes cannot hold {count} sections"
        )
    sections = []
    expected = 0
    for i in range(count):
        raw_id, partition, start, length, records = _SECTION.unpack_from(
            footer, _COUNT.size + i * _SECTION.size
        )
        if start != expected:
            raise CorruptObjectError(
                f"intake object section {i} starts at {start}, expected {expected}"
            )
        expected = start + length
        sections.append(Section(uuid.UUID(bytes=raw_id), partition, start, length, records))
    if expected != data_end:
        raise CorruptObjectError(
            f"intake object sections end at {expected}, but the footer begins at {data_end}"
        )
    return sections
