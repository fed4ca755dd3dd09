"""Choosing a partition for a record, the way Kafka clients do.

Keyed records go to ``to_positive(murmur2(key)) % partitions``, the rule of the Java client's
default partitioner (and of kafka-python, aiokafka and librdkafka's ``murmur2_random``), so a key
produced through the embedded API lands on the same partition as the same key produced by a
Kafka client. Records without a key are spread round robin.
"""

from __future__ import annotations

import itertools

__all__ = ["RoundRobin", "key_partition", "murmur2"]

_M = 0x5BD1E995
_SEED = 0x9747B28C
_MASK = 0xFFFFFFFF


def murmur2(data: bytes) -> int:
    """MurmurHash2 (32-bit, Kafka's seed), returned as a signed 32-bit int like Java's."""
    length = len(data)
    h = (_SEED ^ length) & _MASK
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK
        k ^= k >> 24
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ k
    tail = length % 4
    if tail == 3:
        h ^= data[whole + 2] << 16
    if tail >= 2:
        h ^= data[whole + 1] << 8
    if tail >= 1:
        h ^= data[whole]
        h = (h * _M) & _MASK
    h ^= h >> 13
    h = (h * _M) & _MASK
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def key_partition(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for ``key``."""
    if partitions <= 0:
        raise ValueError("partitions must be positive")
    return (murmur2(key) & 0x7FFFFFFF) % partitions


class RoundRobin:
    """Spreads keyless records over the partitions of one topic in turn."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def next(self, partitions: int) -> int:
        if partitions <= 0:
            raise ValueError("partitions must be positive")
        return next(self._counter) % partitions
