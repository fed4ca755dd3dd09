"""Wharf against one RabbitMQ node with the same AMQP client (pika), in one run.

    .venv/bin/python benchmarks/amqp_peerbench.py                  # 10 s per throughput row
    .venv/bin/python benchmarks/amqp_peerbench.py --quick          # 3 s per row
    .venv/bin/python benchmarks/amqp_peerbench.py --rabbitmq ~/rabbitmq_server-3.13.7/sbin

Starts ``wharf serve --fsync always`` (fresh data directory, free loopback ports), measures it,
stops it; then the same against a RabbitMQ node, so the two never share the machine. RabbitMQ
is found in /usr/lib/rabbitmq/bin (Debian's ``apt-get install rabbitmq-server``; the server is
not started as a service here, this script starts its own node), else where ``rabbitmq-server``
on PATH lives, or given with ``--rabbitmq DIR``; without it the run says so and measures
Wharf alone. The node runs as the current user on 127.0.0.1 only, with its own epmd, Erlang
cookie, mnesia and log directories and no plugins (:class:`cluster_peers.RabbitCluster`).

The load is :mod:`amqp_load` (pika), at 100 B and 1 KiB:

- publish: persistent messages to a durable classic queue with publisher confirms, at most
  1,000 unconfirmed; msg/s is confirmed messages over the time to the last confirm;
- consume: the published messages, prefetch 1,000, ``basic_ack(multiple=True)`` every 250;
- latency: persistent messages paced at 1,000 msg/s (``--rate``), publish to delivery, p50
  and p99 (the first second dropped);
- messages per broker CPU-second: the broker's user + system CPU time (its process and every
  process under it, from /proc/PID/stat) read before and after the publish and the consume.

Prints each figure as it is measured, then a table with Wharf/RabbitMQ ratios. Every process it
starts runs in its own session and is stopped by its process group id.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import amqp_load
import cluster_peers
import peer_nodes
import pika
from peer_nodes import Column, Load


def amqp_on(port: int, rate: float) -> Load:
    return Load(
        prepare=lambda name: amqp_load.declare(port, name, {}),
        publish=lambda name, size, s: amqp_load.publish(port, name, size, s),
        consume=lambda name, count: amqp_load.consume(port, name, count),
        latency=lambda name, size, s: amqp_load.latency(port, name, size, s, rate),
    )


def parse_args() -> argparse.Namespace:
    parser = peer_nodes.argument_parser(__doc__, "publish")
    parser.add_argument(
        "--rabbitmq", metavar="DIR", help="directory of rabbitmq-server and rabbitmqctl"
    )
    parser.add_argument("--skip-rabbitmq", action="store_true", help="measure Wharf alone")
    return peer_nodes.parse(parser)


def main() -> None:
    peer_nodes.line_buffered_stdout()
    args = parse_args()
    base = Path(args.dir or tempfile.mkdtemp(prefix="wharf-amqp-peers-"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"run: {peer_nodes.describe_run()}; pika {pika.__version__}; files under {base}")
    ours, peer = Column("Wharf"), Column("RabbitMQ")

    def run(column: Column, pid: int, port: int) -> None:
        load = amqp_on(port, args.rate)
        peer_nodes.measure(
            column, pid, load, "publish", args.sizes, args.seconds, args.latency_seconds, args.rate
        )

    bin_dir, where = peer_nodes.find_rabbitmq(args.rabbitmq)
    if args.skip_rabbitmq:
        peer.note = "skipped"
    elif bin_dir is None:
        peer.note = "not found"
        print(f"RabbitMQ: skipped, {where}; apt-get install rabbitmq-server, or --rabbitmq DIR")
    try:
        with peer_nodes.wharf(base / "wharf", "always") as wharf:
            print(f"Wharf: pid {wharf.pid}, AMQP port {wharf.amqp_port}, fsync always")
            run(ours, wharf.pid, wharf.amqp_port)
        if bin_dir is not None and not args.skip_rabbitmq:
            node = cluster_peers.RabbitCluster(base / "rabbitmq", 1, bin_dir)
            version = peer_nodes.rabbitmq_version(bin_dir)
            print(f"RabbitMQ {version}: one node from {where}...")
            try:
                with cluster_peers.running(node):
                    pid = node.processes[0].pid
                    print(f"RabbitMQ: pid {pid}, AMQP port {node.amqp_ports[0]}")
                    run(peer, pid, node.amqp_ports[0])
            except RuntimeError as exc:  # did not start, or failed; its log is under --dir
                peer.note = "failed"
                print(f"RabbitMQ: failed: {exc}")
    finally:
        print(f"\nend: {peer_nodes.describe_run()}\n")
        print(peer_nodes.table(ours, peer))
        if args.dir is None:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
