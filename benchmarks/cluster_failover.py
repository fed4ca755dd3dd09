"""Failover of a Kafka producer: kill -9 the node it produces to, time until its next ack.

    PYTHONPATH=src python benchmarks/cluster_failover.py            # 20 kills
    PYTHONPATH=src python benchmarks/cluster_failover.py --kills 5

Starts PostgreSQL, SeaweedFS and three ``wharf serve --cluster`` nodes
(:func:`local_cluster.local_cluster`), creates a one-partition topic, and runs an idempotent
acks=all confluent-kafka producer (bootstrapping to all three nodes) in a thread at ~1,000 msg/s,
each value unique. Then, ``--kills`` times:

1. find the node the producer sends to: the partition's leader in the producer's own view
   (librdkafka's statistics, every 100 ms), not a fresh Metadata answer, which may name
   another node (nodes learn of each other at their next heartbeat, and a producer keeps its
   leader until it has a reason to ask again). That node is the one killed, because it is the
   one whose death the producer has to notice; killing another would not interrupt it;
2. ``kill -9`` it and note the time; the failover time is from then to the delivery callback of
   the first message the producer sent after the kill (acks of messages sent before the kill
   may still be in flight; the first message sent after it is acknowledged only once the
   producer reaches a live leader, and in order after the earlier ones);
3. start the node again, wait until it is ready and every node's Metadata lists three
   brokers again.

It prints each time and the median and maximum, then stops the producer, reads the topic back
through two nodes and checks the acknowledgements (:mod:`wharf.testing.cluster_checker`):
nothing acknowledged lost, dense offsets, both readers agree, no duplicates.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import kafka_load
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient

from wharf.testing import cluster_checker as ack_checker

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import local_cluster  # noqa: E402 - scripts/ is not a package


class PacedProducer:
    """An idempotent acks=all producer sending ``rate`` unique values a second in a thread."""

    def __init__(self, bootstrap: str, topic: str, rate: float) -> None:
        self.topic = topic
        self.rate = rate
        self.producer = Producer(
            {
                "bootstrap.servers": bootstrap,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 1,
                "message.timeout.ms": 300_000,
                "reconnect.backoff.ms": 50,
                "reconnect.backoff.max.ms": 500,
                "statistics.interval.ms": 100,
                "stats_cb": self._stats,
            }
        )
        self.leader_port: int | None = None  # the partition leader's port, as the producer sees it
        self.acks: list[ack_checker.Ack] = []
        self.failed: list[str] = []
        self.sent = 0
        self.acked_seq = -1  # highest sequence number acknowledged so far
        self.acked_at: dict[int, float] = {}  # sequence -> when its ack was seen (watched ones)
        self.watch: set[int] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        self.producer.flush(120)

    def _stats(self, raw: str) -> None:
        stats = json.loads(raw)
        partition = stats.get("topics", {}).get(self.topic, {}).get("partitions", {}).get("0", {})
        ports = {
            b["nodeid"]: int(b["nodename"].rsplit(":", 1)[1])
            for b in stats.get("brokers", {}).values()
            if b.get("nodeid", -1) >= 0
        }
        self.leader_port = ports.get(partition.get("leader", -1))

    def _delivered(self, err: KafkaError | None, message: Message) -> None:
        if err is not None:
            self.failed.append(str(err))
            return
        value = message.value() or b""
        seq = int(value)
        self.acks.append(ack_checker.Ack(message.partition() or 0, message.offset() or 0, value))
        if seq in self.watch:
            self.acked_at[seq] = time.monotonic()
        self.acked_seq = max(self.acked_seq, seq)

    def _run(self) -> None:
        start = time.perf_counter()
        while not self._stop.is_set():
            delay = start + self.sent / self.rate - time.perf_counter()
            if delay > 0:
                self.producer.poll(min(delay, 0.001))
                continue
            self.producer.produce(self.topic, b"%d" % self.sent, on_delivery=self._delivered)
            self.sent += 1
            self.producer.poll(0)


def settled(cluster: local_cluster.LocalCluster) -> bool:
    """Whether every node's Metadata lists every node."""
    return all(
        len(
            AdminClient({"bootstrap.servers": f"127.0.0.1:{node.kafka_port}"})
            .list_topics(timeout=10)
            .brokers
        )
        == len(cluster.nodes)
        for node in cluster.nodes
    )


def wait_until(what: str, check: object, timeout_s: float = 60.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit(f"{what} not within {timeout_s:.0f} s")
        time.sleep(0.1)


def run(base: Path, kills: int, rate: float) -> int:
    with local_cluster.local_cluster(base, 3) as cluster:
        bootstrap = cluster.bootstrap
        wait_until("every node listing every node", lambda: settled(cluster))
        topic = f"failover-{uuid.uuid4().hex[:8]}"
        kafka_load.create_topic(bootstrap, topic)
        producer = PacedProducer(bootstrap, topic, rate)
        producer.start()
        wait_until("first ack", lambda: producer.acked_seq >= 0)
        time.sleep(1.0)
        times: list[float] = []
        for round_ in range(1, kills + 1):
            victim = next(n for n in cluster.nodes if n.kafka_port == producer.leader_port)
            killed_at = time.monotonic()
            victim.kill()
            first_after = producer.sent + 1  # the producer thread may be producing `sent` now
            producer.watch.add(first_after)
            acked_at = producer.acked_at
            wait_until("an ack after the kill", lambda: first_after in acked_at, 120)  # noqa: B023
            took = acked_at[first_after] - killed_at
            times.append(took)
            print(
                f"kill {round_:2d}: node {victim.index} (the producer's leader), "
                f"next ack after {took:.3f} s",
                flush=True,
            )
            cluster.restart(victim)
            wait_until("every node listing every node", lambda: settled(cluster))
            time.sleep(1.0)
        producer.stop()
        print(
            f"\nfailover over {len(times)} kills: median {statistics.median(times):.3f} s, "
            f"max {max(times):.3f} s, min {min(times):.3f} s"
        )
        nodes = cluster.nodes
        first = ack_checker.read_partitions(f"127.0.0.1:{nodes[1].kafka_port}", topic, 1)
        second = ack_checker.read_partitions(f"127.0.0.1:{nodes[2].kafka_port}", topic, 1)
        report = ack_checker.check(producer.acks, first, second)
        print(f"sent {producer.sent}, delivery failures {len(producer.failed)}: {report}")
        return 0 if report.ok and not producer.failed else 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--rate", type=float, default=1000.0, help="msgs/s")
    parser.add_argument("--dir", help="a new directory for servers and logs (kept)")
    args = parser.parse_args()
    base = Path(args.dir or tempfile.mkdtemp(prefix="wharf-failover-"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"servers and logs under {base}; load average {os.getloadavg()}", flush=True)
    code = run(base, args.kills, args.rate)
    print(f"load average {os.getloadavg()}")
    sys.exit(code)


if __name__ == "__main__":
    main()
