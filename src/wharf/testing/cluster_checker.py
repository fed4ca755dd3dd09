"""What a fault test or the failover benchmark checks after a cluster was hurt: nothing
acknowledged lost, nothing invented.

A test produces unique values with an idempotent producer and records what the cluster
acknowledged (:class:`Ack`: partition, offset, value). Afterwards :func:`read_partitions` reads
every partition from offset 0 to its end through one node, and :func:`check` compares the
acknowledgements with two such reads made through two different nodes:

* **lost**: an acknowledged value missing, or found at another offset than the one acknowledged;
* **gaps**: offsets that are not dense (each record's offset is the previous one plus one, from
  the log start);
* **disagreements**: partitions whose records the two readers saw differently (order or content);
* **duplicates**: a value stored twice (an idempotent producer's retry must be deduplicated).

The report keeps every finding, so a failing assertion shows what went wrong, not just that
something did.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

Records = dict[int, list[tuple[int, bytes]]]  # partition -> [(offset, value)] in read order


@dataclass(frozen=True)
class Ack:
    partition: int
    offset: int
    value: bytes


@dataclass
class CheckReport:
    acknowledged: int
    stored: int
    lost: list[Ack] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    disagreements: list[int] = field(default_factory=list)
    duplicates: list[bytes] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.gaps or self.disagreements or self.duplicates)

    def __str__(self) -> str:
        return (
            f"{self.acknowledged} acknowledged, {self.stored} stored; lost {len(self.lost)} "
            f"{self.lost[:5]}, gaps {self.gaps[:5]}, readers disagree on partitions "
            f"{self.disagreements}, duplicates {len(self.duplicates)} {self.duplicates[:5]}"
        )


def read_partitions(
    bootstrap: str, topic: str, partitions: int, *, timeout_s: float = 60.0
) -> Records:
    """Every record of ``topic``, partition by partition, from the log start to the high
    watermark as it stood when reading began, through the node at ``bootstrap`` (needs
    confluent-kafka, a test dependency)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"checker-{time.monotonic_ns()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        }
    )
    try:
        ends: dict[int, int] = {}
        for p in range(partitions):
            _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        records: Records = {p: [] for p in range(partitions)}
        pending = {p for p, end in ends.items() if end > 0}
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise AssertionError(f"reading {topic} did not reach the ends {ends}: {pending}")
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                continue
            partition, offset = message.partition(), message.offset()
            if partition in pending and offset is not None and offset < ends[partition]:
                records[partition].append((offset, message.value() or b""))
                if offset + 1 >= ends[partition]:
                    pending.discard(partition)
        return records
    finally:
        consumer.close()


def check(acks: Iterable[Ack], first: Records, second: Records) -> CheckReport:
    """Compare acknowledgements with two readers' views (see the module docstring)."""
    acked = list(acks)
    report = CheckReport(acknowledged=len(acked), stored=sum(len(r) for r in first.values()))
    where: dict[tuple[int, int], bytes] = {
        (p, offset): value for p, records in first.items() for offset, value in records
    }
    for ack in acked:
        if where.get((ack.partition, ack.offset)) != ack.value:
            report.lost.append(ack)
    for p, records in first.items():
        offsets = [offset for offset, _ in records]
        for before, after in zip(offsets, offsets[1:], strict=False):
            if after != before + 1:
                report.gaps.append(f"partition {p}: {before} then {after}")
        if second.get(p) != records:
            report.disagreements.append(p)
    counts: Mapping[bytes, int] = Counter(v for r in first.values() for _, v in r)
    report.duplicates = sorted(v for v, n in counts.items() if n > 1)
    return report
