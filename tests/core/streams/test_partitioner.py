import random
import warnings
from collections.abc import Callable

import pytest

from wharf.core.streams.partitioner import RoundRobin, key_partition, murmur2

# Values of org.apache.kafka.common.utils.Utils.murmur2 quoted in the Java client's own tests
# (UtilsTest.testMurmur2), independent of the Python reference below.
JAVA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.mark.parametrize(("key", "expected"), sorted(JAVA_VECTORS.items()))
def test_murmur2_matches_java_client(key: bytes, expected: int) -> None:
    assert murmur2(key) == expected


def kafka_python_murmur2() -> Callable[[bytes], int]:
    # kafka-python's package import trips a DeprecationWarning of its own (importlib.resources)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from kafka.partitioner.default import murmur2

    return murmur2  # type: ignore[no-any-return]


def test_murmur2_matches_kafka_python_for_many_keys() -> None:
    reference_murmur2 = kafka_python_murmur2()
    rng = random.Random(20261129)
    keys = [b"", b"\x00", b"\xff\xff\xff", b"key-1", "ключ".encode()]
    keys += [rng.randbytes(rng.randrange(0, 70)) for _ in range(3000)]
    for key in keys:
        reference = reference_murmur2(key)
        signed = reference - (1 << 32) if reference & 0x80000000 else reference
        assert murmur2(key) == signed, key
        for n in (1, 3, 7, 12, 100):
            assert key_partition(key, n) == (reference & 0x7FFFFFFF) % n


def test_round_robin_cycles_through_partitions() -> None:
    rr = RoundRobin()
    assert [rr.next(3) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_partition_count_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        key_partition(b"k", 0)
    with pytest.raises(ValueError, match="positive"):
        RoundRobin().next(0)
