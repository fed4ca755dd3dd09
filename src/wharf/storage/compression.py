"""The compression codecs of RecordBatch v2 records sections (gzip, snappy, lz4, zstd).

A batch's attributes name the codec of its records section (bits 0-2, see
:mod:`wharf.storage.record_batch`); the section is compressed as a whole. All four codecs run
in C through cramjam. Snappy is written in the xerial framing the Java client writes and read
both framed and raw.

How it works: compression trusts its input (Wharf's own records). Decompression never trusts
it: output grows step by step up to a limit instead of being allocated from a size the frame
announces, and every failure becomes :class:`~wharf.errors.CorruptBatchError`.
"""

from __future__ import annotations

import struct
import zlib

import cramjam

from wharf.errors import CorruptBatchError

__all__ = [
    "COMPRESSION_GZIP",
    "COMPRESSION_LZ4",
    "COMPRESSION_NONE",
    "COMPRESSION_SNAPPY",
    "COMPRESSION_ZSTD",
    "compress",
    "decompress",
]

COMPRESSION_NONE = 0
COMPRESSION_GZIP = 1
COMPRESSION_SNAPPY = 2
COMPRESSION_LZ4 = 3
COMPRESSION_ZSTD = 4

_XERIAL_MAGIC = b"\x82SNAPPY\x00"
_XERIAL_HEADER_SIZE = 16
_BLOCK_LEN = struct.Struct(">i")


def compress(codec: int, data: bytes) -> bytes:
    """Compress a records section the way Kafka clients expect to read it."""
    if codec == COMPRESSION_GZIP:
        return bytes(cramjam.gzip.compress(data))
    if codec == COMPRESSION_SNAPPY:
        return _xerial_frame(data)
    if codec == COMPRESSION_LZ4:
        return bytes(cramjam.lz4.compress(data))
    if codec == COMPRESSION_ZSTD:
        return bytes(cramjam.zstd.compress(data))
    raise ValueError(f"unknown compression codec {codec}")


def _xerial_frame(data: bytes) -> bytes:
    # Xerial snappy framing (what the Java client writes): magic, version 1, compatible 1,
    # then blocks of (int32 compressed length, raw snappy).
    out = bytearray(_XERIAL_MAGIC + b"\x00\x00\x00\x01\x00\x00\x00\x01")
    block = 32 * 1024
    for start in range(0, max(len(data), 1), block):
        raw = bytes(cramjam.snappy.compress_raw(data[start : start + block]))
        out += _BLOCK_LEN.pack(len(raw))
        out += raw
    return bytes(out)


def decompress(codec: int, data: bytes | memoryview, limit: int) -> bytes:
    """Decompress a records section, refusing output larger than ``limit`` bytes."""
    try:
        if codec == COMPRESSION_GZIP:
            out = _gunzip(data, limit)
        elif codec == COMPRESSION_SNAPPY:
            out = _unsnappy(data, limit)
        elif codec == COMPRESSION_LZ4:
            out = _bounded(cramjam.lz4.decompress_into, data, limit)
        elif codec == COMPRESSION_ZSTD:
            out = _bounded(cramjam.zstd.decompress_into, data, limit)
        else:
            raise CorruptBatchError(f"unknown compression codec {codec}")
    except CorruptBatchError:
        raise
    except (cramjam.DecompressionError, zlib.error, ValueError) as exc:
        raise CorruptBatchError(f"cannot decompress records (codec {codec}): {exc}") from exc
    return out


def _gunzip(data: bytes | memoryview, limit: int) -> bytes:
    out = bytearray()
    rest = bytes(data)
    while rest:
        d = zlib.decompressobj(wbits=31)
        out += d.decompress(rest, limit + 1 - len(out))
        if len(out) > limit:
            raise CorruptBatchError(f"decompressed records exceed {limit} bytes")
        if not d.eof:
            raise CorruptBatchError("truncated gzip stream in batch")
        rest = d.unused_data
    return bytes(out)


def _bounded(fn: object, data: bytes | memoryview, limit: int) -> bytes:
    # Decompress into a buffer grown step by step up to the limit: the output size announced
    # inside the frame is never trusted for allocation.
    size = min(limit, max(4 * len(data), 64 * 1024))
    while True:
        buf = bytearray(size)
        try:
            n = fn(bytes(data), buf)  # type: ignore[operator]
        except cramjam.DecompressionError as exc:
            if "whole buffer" not in str(exc) or size >= limit:
                raise CorruptBatchError(
                    f"cannot decompress records within {limit} bytes: {exc}"
                ) from exc
            size = min(limit, size * 4)
            continue
        if int(n) < size or size >= limit:
            if int(n) > limit:
                raise CorruptBatchError(f"decompressed records exceed {limit} bytes")
            return bytes(buf[: int(n)])
        size = min(limit, size * 4)


def _unsnappy(data: bytes | memoryview, limit: int) -> bytes:
    raw = bytes(data)
    if not raw.startswith(_XERIAL_MAGIC):
        return _raw_snappy(raw, limit)
    pos = _XERIAL_HEADER_SIZE
    if len(raw) < pos:
        raise CorruptBatchError("truncated xerial snappy header")
    out = bytearray()
    while pos < len(raw):
        if len(raw) - pos < 4:
            raise CorruptBatchError("truncated xerial snappy block length")
        (n,) = _BLOCK_LEN.unpack_from(raw, pos)
        pos += 4
        if n < 0 or n > len(raw) - pos:
            raise CorruptBatchError(f"xerial snappy block of {n} bytes overruns the batch")
        out += _raw_snappy(raw[pos : pos + n], limit - len(out))
        pos += n
    return bytes(out)


def _raw_snappy(raw: bytes, limit: int) -> bytes:
    size = int(cramjam.snappy.decompress_raw_len(raw))
    if size > limit:
        raise CorruptBatchError(f"decompressed records exceed the limit ({size} > {limit})")
    return bytes(cramjam.snappy.decompress_raw(raw))
