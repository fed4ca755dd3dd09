"""Where a three-node cluster's CPU goes at 1,000 msg/s: end-to-end latency with the CPU
seconds of every process behind it.

    PYTHONPATH=src python benchmarks/cluster_latency_cpu.py                 # AMQP and Kafka
    PYTHONPATH=src python benchmarks/cluster_latency_cpu.py --protocol amqp --rounds 3

Starts :func:`local_cluster.local_cluster` (PostgreSQL, SeaweedFS, three ``wharf serve
--cluster`` nodes) and runs the latency test of ``benchmarks/cluster.py`` (100 B at a paced
1,000 msg/s, first second dropped) ``--rounds`` times per protocol, each on a fresh queue or
topic: AMQP with pika, published through node 0 and consumed through node 1, persistent
messages, acks every 100 (:func:`amqp_load.latency`); Kafka with confluent-kafka, idempotent,
acks=all (:func:`kafka_load.latency`). For each round it prints p50, p99 and max, and the CPU
seconds spent during the round by each node, by PostgreSQL (the postmaster and all its
backends), by SeaweedFS and by this process (the clients), also per message sent. Nothing else
should run on the machine meanwhile: the figures are what one message costs the whole cluster
when nothing batches, which is what sets the latency tail on a small machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import amqp_load
import kafka_load
from peer_nodes import cpu_seconds

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import local_cluster  # noqa: E402 - scripts/ is not a package

RATE = 1000.0
SIZE = 100


def postmaster(postgres: local_cluster.Postgres) -> int:
    """The server's first process: with its descendants, the whole of PostgreSQL."""
    return int((postgres.data / "postmaster.pid").read_text().split()[0])


def snapshot(cluster: local_cluster.LocalCluster) -> dict[str, float]:
    """CPU seconds so far of each part of the cluster and of this process."""
    spent = {
        f"node {node.index}": cpu_seconds(node.process.pid)
        for node in cluster.nodes
        if node.process is not None
    }
    spent["postgres"] = cpu_seconds(postmaster(cluster.postgres))
    process = cluster.s3.process
    spent["seaweedfs"] = cpu_seconds(process.pid) if process is not None else 0.0
    spent["client"] = time.process_time()
    return spent


def round_of(
    cluster: local_cluster.LocalCluster, run: Callable[[], dict[str, float]], sent: int
) -> str:
    # CPU of a process and its descendants, those that ended during the round included
    before = snapshot(cluster)
    result = run()
    after = snapshot(cluster)
    spent = {part: after[part] - before.get(part, 0.0) for part in after}
    total = sum(spent.values())
    parts = "  ".join(f"{part} {seconds:.2f}" for part, seconds in spent.items())
    return (
        f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  "
        f"max {result['max_ms']:.2f} ms\n"
        f"    CPU s: {parts}  all {total:.2f}  ({total / sent * 1e6:.0f} us per message)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--protocol", choices=("amqp", "kafka", "both"), default="both")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    sent = int(RATE * args.seconds)
    base = Path(tempfile.mkdtemp(prefix="wharf-latency-cpu-"))
    print(f"servers and logs under {base}", flush=True)
    with local_cluster.local_cluster(base, 3) as cluster:
        time.sleep(3)  # the nodes' start-up work settles
        amqp_ports = [node.amqp_port for node in cluster.nodes]
        for protocol in ("amqp", "kafka"):
            if args.protocol not in (protocol, "both"):
                continue
            for n in range(1, args.rounds + 1):
                name = f"lat-{uuid.uuid4().hex[:8]}"
                if protocol == "amqp":
                    amqp_load.declare(amqp_ports[0], name, {})

                    def run(name: str = name) -> dict[str, float]:
                        return amqp_load.latency(
                            amqp_ports[0], name, SIZE, args.seconds, RATE,
                            consume_port=amqp_ports[1],
                        )  # fmt: skip
                else:
                    kafka_load.create_topic(cluster.bootstrap, name)

                    def run(name: str = name) -> dict[str, float]:
                        return kafka_load.latency(
                            cluster.bootstrap, name, SIZE, args.seconds, RATE
                        )

                print(f"{protocol} round {n}: {round_of(cluster, run, sent)}", flush=True)


if __name__ == "__main__":
    main()
