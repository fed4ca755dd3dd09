"""How Wharf's AMQP definition costs grow with the number of queues (issue 15).

Starts ``wharf serve`` (fsync always, a fresh data directory) and drives it with pika on one
connection and one channel, sequentially (each declare waits for its declare-ok), as Celery or
an RPC client would:

1. transient auto-delete (without and with x-expires) and exclusive server-named declares on
   an empty broker;
2. ``--queues`` durable queues, the rate printed per thousand already declared;
3. the same transient and exclusive declares again, now beside those queues;
4. ``--queues // 4`` durable direct exchanges, then one binding per durable queue (queue ``i``
   to exchange ``i % exchanges``), both per thousand;
5. a restart (graceful stop, then the time from starting ``wharf serve`` to its AMQP and Kafka
   ports accepting a connection, and to a passive declare of the last queue answering);
6. the durable queues deleted, per thousand still existing.

Rates are operations over wall-clock seconds; the broker's RSS and open files are printed at
each stage, and its CPU use while idle at the full size. With ``--messages N``, N persistent
messages are published into each durable queue (confirmed) before the restart, which then also
times a ``basic.get`` of the last queue's first message; without it the queues stay empty and
hold no log files (a durable queue's logs are made by its first message). With
``--partitions N``, N partitions (topics of 100, created with confluent-kafka's AdminClient)
are given one record each (acks=all) before the restart, which then also times the last
partition's record fetched. Run:
``python benchmarks/scaling.py --queues 50000 [--messages 3] [--partitions 20000] [--crash]``
(``--crash``: after the restart, kill -9 and start again: no summaries, so every queue and
partition with logs is recovered, in the background after the ports open, which is timed
from the broker's log lines; the queue's first message was taken by the restart before, so
the second one is got).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pika
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from pika.adapters.blocking_connection import BlockingChannel

STEP = 1000
TOPIC_WIDTH = 100


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def resources(pid: int) -> str:
    """The broker's RSS and open file descriptors."""
    rss = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) / 1024
    return f"RSS {rss:.0f} MiB, {len(os.listdir(f'/proc/{pid}/fd'))} open files"


class Broker:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.kafka_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0  # when the last start began (perf_counter)
        self.log_lines = 0  # lines of the log before the last start

    def start(self) -> float:
        """Start the server; return the seconds until its AMQP and Kafka ports accept a
        connection."""
        started = time.perf_counter()
        log_path = self.workdir / "wharf.log"
        self.log_lines = len(log_path.read_text().splitlines()) if log_path.exists() else 0
        log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable, "-m", "wharf.cli.main", "serve",
                "--host", "127.0.0.1",
                "--amqp-port", str(self.port), "--kafka-port", str(self.kafka_port),
                "--http-port", "0",
                "--data-dir", str(self.workdir / "data"),
                "--fsync", "always", "--log-level", "info",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.started = started
        deadline = started + 600
        while not (port_open(self.port) and port_open(self.kafka_port)):
            if self.proc.poll() is not None or time.perf_counter() > deadline:
                raise SystemExit(f"wharf did not start; see {self.workdir / 'wharf.log'}")
            time.sleep(0.01)
        return time.perf_counter() - started

    def recovered(self, what: str) -> str:
        """Wait for the log line saying that the background has recovered the logs of
        ``what`` ("queues", "partitions") a crash left, since the last start; return its
        account and the time since that start."""
        deadline = time.perf_counter() + 600
        while time.perf_counter() < deadline:
            for line in (self.workdir / "wharf.log").read_text().splitlines()[self.log_lines:]:
                if f"{what} left by a crash in" in line:
                    elapsed = time.perf_counter() - self.started
                    return f"{line.split(' the logs of ')[1]}; {elapsed:.2f} s from start"
            time.sleep(0.05)
        raise SystemExit(f"the {what} were not recovered within 600 s")

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.terminate()
        self.proc.wait(120)

    def discard(self, *, keep: bool) -> None:
        """Kill the server if it still runs; remove its directory unless ``keep``."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if keep:
            print(f"data kept in {self.workdir}")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid


def idle_cpu(pid: int, seconds: float = 5.0) -> float:
    """The broker's CPU seconds per second while no client asks anything of it."""

    def used() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    before = used()
    time.sleep(seconds)
    return (used() - before) / seconds


def channel(port: int) -> tuple[pika.BlockingConnection, BlockingChannel]:
    params = pika.ConnectionParameters("127.0.0.1", port, heartbeat=0)
    connection = pika.BlockingConnection(params)
    return connection, connection.channel()


def per_thousand(label: str, count: int, op: Callable[[int], None]) -> list[float]:
    """Run ``op(0..count-1)``, printing the rate of each thousand; return the rates."""
    rates: list[float] = []
    for start in range(0, count, STEP):
        stop = min(start + STEP, count)
        began = time.perf_counter()
        for i in range(start, stop):
            op(i)
        rate = (stop - start) / (time.perf_counter() - began)
        rates.append(rate)
        print(f"  {label} {start:>6}-{stop - 1:<6} {rate:8.0f}/s", flush=True)
    if len(rates) > 1:
        print(f"  {label}: last thousand at {rates[-1] / rates[0]:.0%} of the first", flush=True)
    return rates


def timed(label: str, count: int, op: Callable[[int], None]) -> float:
    began = time.perf_counter()
    for i in range(count):
        op(i)
    rate = count / (time.perf_counter() - began)
    print(f"  {label}: {rate:.0f}/s", flush=True)
    return rate


def short_lived(ch: BlockingChannel, count: int, where: str) -> None:
    """Transient auto-delete (without and with x-expires) and exclusive server-named declares
    (then deleted)."""
    names: list[str] = []

    def transient(i: int) -> None:
        names.append(f"t-{where}-{i}")
        ch.queue_declare(names[-1], auto_delete=True)

    def exclusive(i: int) -> None:
        names.append(ch.queue_declare("", exclusive=True).method.queue)

    def expiring(i: int) -> None:  # as kombu's reply queues
        names.append(f"x-{where}-{i}")
        ch.queue_declare(names[-1], auto_delete=True, arguments={"x-expires": 600_000})

    timed(f"transient auto-delete declares ({where})", count, transient)
    timed(f"transient x-expires declares ({where})", count, expiring)
    timed(f"exclusive server-named declares ({where})", count, exclusive)
    for name in names:
        ch.queue_delete(name)


def topics_of(partitions: int) -> list[tuple[str, int]]:
    """(name, partition count) of the topics holding ``partitions`` partitions."""
    return [
        (f"t-{start // TOPIC_WIDTH}", min(TOPIC_WIDTH, partitions - start))
        for start in range(0, partitions, TOPIC_WIDTH)
    ]


def fill_topics(broker: Broker, partitions: int) -> None:
    """Create the topics and produce one record into each partition."""
    bootstrap = f"127.0.0.1:{broker.kafka_port}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = topics_of(partitions)
    began = time.perf_counter()
    for name, count in topics:
        for future in admin.create_topics([NewTopic(name, count)], request_timeout=120).values():
            future.result()
    created = time.perf_counter() - began
    del admin  # its threads would keep calling the stopped broker
    rate = produce_one_each(broker, topics)
    print(f"  {partitions} partitions created at {partitions / created:.0f}/s, one record into "
          f"each at {rate:.0f}/s; {resources(broker.pid)}", flush=True)  # fmt: skip


def produce_one_each(broker: Broker, topics: list[tuple[str, int]]) -> float:
    """Produce one 100 B record into every partition of ``topics`` (acks=all); returns
    records per second."""
    producer = Producer({"bootstrap.servers": f"127.0.0.1:{broker.kafka_port}",
                         "acks": "all", "linger.ms": 5})  # fmt: skip
    began = time.perf_counter()
    total = 0
    for name, count in topics:
        for index in range(count):
            producer.produce(name, b"x" * 100, partition=index)
            producer.poll(0)
        total += count
    if producer.flush(120) != 0:
        raise SystemExit("records not delivered")
    return total / (time.perf_counter() - began)


def last_record(broker: Broker, partitions: int) -> None:
    """Fetch the record of the last partition (raises SystemExit without it)."""
    name, count = topics_of(partitions)[-1]
    consumer = Consumer({"bootstrap.servers": f"127.0.0.1:{broker.kafka_port}",
                         "group.id": "scaling", "enable.auto.commit": False})  # fmt: skip
    try:
        consumer.assign([TopicPartition(name, count - 1, 0)])
        message = consumer.poll(120)
        if message is None or message.error() is not None:
            raise SystemExit(f"no record from {name}-{count - 1} after the restart")
    finally:
        consumer.close()


def restart(
    broker: Broker, args: argparse.Namespace, label: str
) -> tuple[pika.BlockingConnection, BlockingChannel]:
    """Start the stopped broker; print when its ports were ready, a passive declare of the
    last queue answered, and (with messages or partitions) the last ones read."""
    n = args.queues
    began = time.perf_counter()
    port_ready = broker.start()
    connection, ch = channel(broker.port)
    ch.queue_declare(f"q-{n - 1}", passive=True)
    answered = time.perf_counter() - began
    got = ""
    if args.messages:
        method, _, body = ch.basic_get(f"q-{n - 1}", auto_ack=True)
        if method is None or body != b"m" * 100:
            raise SystemExit(f"q-{n - 1} lost its messages in the {label}")
        got = f", its first message got at {time.perf_counter() - began:.2f} s"
    if args.partitions:
        last_record(broker, args.partitions)
        got += (f", the last of {args.partitions} partitions' record fetched at "
                f"{time.perf_counter() - began:.2f} s")  # fmt: skip
    print(f"{label} with {n} queues, {max(n // 4, 1)} exchanges, {n} bindings: ports "
          f"ready in {port_ready:.2f} s, first passive declare answered at {answered:.2f} s"
          f"{got}; {resources(broker.pid)}", flush=True)  # fmt: skip
    return connection, ch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--queues", type=int, default=20_000)
    parser.add_argument("--short-lived", type=int, default=2000,
                        help="transient and exclusive declares at each end")
    parser.add_argument("--messages", type=int, default=0,
                        help="persistent messages published into each durable queue")
    parser.add_argument("--partitions", type=int, default=0,
                        help="partitions given one record each before the restart")
    parser.add_argument("--crash", action="store_true",
                        help="after the restart, also kill -9 the broker and start it again")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()
    if args.crash and args.messages == 1:
        parser.error("--crash reads each queue's second message: give --messages 2 or more")
    n = args.queues
    exchanges = max(n // 4, 1)
    workdir = Path(tempfile.mkdtemp(prefix="wharf-scaling-"))
    broker = Broker(workdir)
    try:
        broker.start()
        connection, ch = channel(broker.port)
        print(f"wharf, {n} durable queues, pika, one channel, sequential", flush=True)
        short_lived(ch, args.short_lived, "empty broker")
        print(f"  {resources(broker.pid)}", flush=True)
        per_thousand("durable queue declares", n, lambda i: ch.queue_declare(
            f"q-{i}", durable=True))  # fmt: skip
        print(f"  {resources(broker.pid)}", flush=True)
        short_lived(ch, args.short_lived, f"beside {n} queues")
        per_thousand("durable exchange declares", exchanges, lambda i: ch.exchange_declare(
            f"ex-{i}", "direct", durable=True))  # fmt: skip
        per_thousand("durable bindings", n, lambda i: ch.queue_bind(
            f"q-{i}", f"ex-{i % exchanges}", f"k-{i}"))  # fmt: skip
        print(f"  {resources(broker.pid)}; idle CPU {idle_cpu(broker.pid):.2f} s/s", flush=True)
        if args.messages:
            ch.confirm_delivery()
            persistent = pika.BasicProperties(delivery_mode=2)
            per_thousand(f"queues given {args.messages} confirmed persistent messages", n,
                         lambda i: [ch.basic_publish("", f"q-{i}", b"m" * 100, persistent)
                                    for _ in range(args.messages)])  # fmt: skip
            print(f"  {resources(broker.pid)}; idle CPU {idle_cpu(broker.pid):.2f} s/s",
                  flush=True)  # fmt: skip
        connection.close()
        if args.partitions:
            fill_topics(broker, args.partitions)
        broker.stop()
        connection, ch = restart(broker, args, "restart")
        if args.crash:
            connection.close()
            assert broker.proc is not None
            broker.proc.kill()  # kill -9: no summaries, every queue with logs is replayed
            broker.proc.wait()
            connection, ch = restart(broker, args, "restart after kill -9")
            for what, held in (("queues", args.messages), ("partitions", args.partitions)):
                if held:
                    print(f"  recovered in the background: {broker.recovered(what)}; "
                          f"{resources(broker.pid)}", flush=True)  # fmt: skip
        per_thousand("durable queue deletes", n, lambda i: ch.queue_delete(f"q-{n - 1 - i}"))
        connection.close()
        broker.stop()
    finally:
        broker.discard(keep=args.keep)


if __name__ == "__main__":
    main()
