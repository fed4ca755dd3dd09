"""kcat (Debian's, librdkafka 2.0.2) against ``wharf serve``: metadata, produce, consume, groups.

kcat's older librdkafka is the strictest parser of the four clients (for instance of tagged
fields holding default values), which is why it is driven here at all.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from confluent_kafka import Producer

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(
        shutil.which("kcat") is None, reason="kcat is not installed (.ci/system-deps)"
    ),
]


def kcat(*args: str, stdin: str | None = None, timeout: float = 60) -> str:
    result = subprocess.run(
        ["kcat", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_metadata_listing(bootstrap: str, topic_name: str) -> None:
    kcat("-b", bootstrap, "-P", "-t", topic_name, stdin="hello\n")
    out = kcat("-b", bootstrap, "-L", "-t", topic_name)
    assert "1 brokers:" in out
    assert f'topic "{topic_name}" with 1 partitions' in out


def test_produce_and_consume_with_keys(bootstrap: str, topic_name: str) -> None:
    lines = "".join(f"key{i}:value{i}\n" for i in range(20))
    kcat("-b", bootstrap, "-P", "-t", topic_name, "-K:", "-z", "snappy", stdin=lines)
    out = kcat("-b", bootstrap, "-C", "-t", topic_name, "-o", "beginning", "-e", "-f", "%k=%s@%o\n")
    assert out.splitlines() == [f"key{i}=value{i}@{i}" for i in range(20)]


def test_consumer_group(bootstrap: str, topic_name: str, group_name: str) -> None:
    kcat("-b", bootstrap, "-P", "-t", topic_name, stdin="".join(f"m{i}\n" for i in range(5)))
    out = kcat(
        "-b",
        bootstrap,
        "-G",
        group_name,
        "-X",
        "auto.offset.reset=earliest",
        "-X",
        "session.timeout.ms=6000",
        "-c",
        "5",
        "-f",
        "%s\n",
        topic_name,
    )
    assert sorted(out.split()) == [f"m{i}" for i in range(5)]


@pytest.mark.parametrize("codec", ["gzip", "snappy", "lz4", "zstd"])
def test_reads_batches_compressed_by_confluent_kafka(
    bootstrap: str, topic_name: str, codec: str
) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "compression.type": codec, "linger.ms": 50}
    )
    for i in range(30):
        producer.produce(topic_name, key=b"k%d" % i, value=b"value-%d" % i, partition=0)
    assert producer.flush(30) == 0
    out = kcat("-b", bootstrap, "-C", "-t", topic_name, "-o", "beginning", "-e", "-f", "%k=%s\n")
    assert out.splitlines() == [f"k{i}=value-{i}" for i in range(30)]
