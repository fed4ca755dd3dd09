"""How Wharf's topic costs grow with the number of partitions (issue 15).

Starts ``wharf serve`` (fsync always, a fresh data directory) and drives it with
confluent-kafka's AdminClient, one CreateTopics request at a time, each waiting for its answer:

1. ``--single`` one-partition topics (as auto-creation or a service per topic makes them);
2. ``--wide`` topics of ``--width`` partitions each;

each printed as partitions created per second, per thousand partitions already created. Then
one record is produced into every partition (acks=all), the broker's RSS and open files are
printed, and its CPU use while idle; then a restart (graceful stop, then the time from starting
``wharf serve`` to its ports accepting a connection, to a Metadata request for every topic
answered, and to the last partition's record fetched), and with ``--crash`` the same after a
kill -9 (and when the background has recovered every log, from the broker's log line); then
every topic is deleted, one DeleteTopics request each, per thousand partitions
still existing. Run:
``python benchmarks/topic_scaling.py --single 10000 --wide 100 --width 100 [--crash]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from scaling import STEP, Broker, idle_cpu, produce_one_each, resources


def per_thousand(label: str, weights: Sequence[int], op: Callable[[int], None]) -> list[float]:
    """Run ``op(i)`` for each ``weights[i]`` partitions, printing partitions per second of
    each thousand (or more, when one call makes more); return the rates."""
    rates: list[float] = []
    done = start = 0
    began = time.perf_counter()
    for i, weight in enumerate(weights):
        op(i)
        done += weight
        if done - start >= STEP or i == len(weights) - 1:
            rate = (done - start) / (time.perf_counter() - began)
            rates.append(rate)
            print(f"  {label} {start:>6}-{done - 1:<6} {rate:8.0f} partitions/s", flush=True)
            start, began = done, time.perf_counter()
    if len(rates) > 1:
        print(f"  {label}: last thousand at {rates[-1] / rates[0]:.0%} of the first", flush=True)
    return rates


def admin_for(broker: Broker) -> AdminClient:
    return AdminClient({"bootstrap.servers": f"127.0.0.1:{broker.kafka_port}"})


def create(admin: AdminClient, name: str, partitions: int) -> None:
    futures = admin.create_topics([NewTopic(name, partitions)], request_timeout=120)
    for future in futures.values():
        future.result()


def delete(admin: AdminClient, name: str) -> None:
    for future in admin.delete_topics([name], request_timeout=120).values():
        future.result()


def restart(broker: Broker, topics: list[tuple[str, int]], what: str) -> None:
    """Start the stopped broker; print when its ports, Metadata of every topic and the last
    partition's record answered."""
    began = time.perf_counter()
    ready = broker.start()
    listed = admin_for(broker).list_topics(timeout=120)
    metadata = time.perf_counter() - began
    if len(listed.topics) != len(topics):
        raise SystemExit(f"{len(listed.topics)} topics after the {what}, not {len(topics)}")
    last, count = topics[-1]
    consumer = Consumer({"bootstrap.servers": f"127.0.0.1:{broker.kafka_port}",
                         "group.id": "scaling", "enable.auto.commit": False})  # fmt: skip
    consumer.assign([TopicPartition(last, count - 1, 0)])
    message = consumer.poll(120)
    if message is None or message.error() is not None:
        raise SystemExit(f"no record from {last}-{count - 1} after the {what}")
    fetched = time.perf_counter() - began
    consumer.close()
    print(f"{what} with {len(topics)} topics, {sum(c for _, c in topics)} partitions: ports "
          f"ready in {ready:.2f} s, Metadata of every topic at {metadata:.2f} s, the last "
          f"partition's record fetched at {fetched:.2f} s; {resources(broker.pid)}",
          flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--single", type=int, default=10_000, help="one-partition topics")
    parser.add_argument("--wide", type=int, default=100, help="topics of --width partitions")
    parser.add_argument("--width", type=int, default=100)
    parser.add_argument("--crash", action="store_true",
                        help="after the restart, also kill -9 the broker and start it again")
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    args = parser.parse_args()
    topics = [(f"s-{i}", 1) for i in range(args.single)]
    topics += [(f"w-{i}", args.width) for i in range(args.wide)]
    total = sum(count for _, count in topics)
    workdir = Path(tempfile.mkdtemp(prefix="wharf-topic-scaling-"))
    broker = Broker(workdir)
    try:
        broker.start()
        admin = admin_for(broker)
        print(f"wharf, {len(topics)} topics, {total} partitions, confluent-kafka "
              f"AdminClient, sequential", flush=True)  # fmt: skip
        print(f"  {resources(broker.pid)}", flush=True)
        singles = topics[: args.single]
        per_thousand("one-partition topic creates", [1] * len(singles),
                     lambda i: create(admin, *singles[i]))  # fmt: skip
        print(f"  {resources(broker.pid)}", flush=True)
        wide = topics[args.single :]
        per_thousand(f"{args.width}-partition topic creates", [args.width] * len(wide),
                     lambda i: create(admin, *wide[i]))  # fmt: skip
        print(f"  {resources(broker.pid)}; idle CPU {idle_cpu(broker.pid):.2f} s/s", flush=True)
        del admin  # its threads would keep calling the stopped broker
        rate = produce_one_each(broker, topics)
        print(f"  one record into each partition: {rate:.0f} records/s; "
              f"{resources(broker.pid)}; idle CPU {idle_cpu(broker.pid):.2f} s/s",
              flush=True)  # fmt: skip
        broker.stop()
        restart(broker, topics, "restart")
        if args.crash:
            assert broker.proc is not None
            broker.proc.kill()  # kill -9: no summaries, every log is recovered
            broker.proc.wait()
            restart(broker, topics, "restart after kill -9")
            print(f"  recovered in the background: {broker.recovered('partitions')}; "
                  f"{resources(broker.pid)}", flush=True)  # fmt: skip
        admin = admin_for(broker)
        remaining = list(reversed(topics))
        per_thousand("topic deletes", [count for _, count in remaining],
                     lambda i: delete(admin, remaining[i][0]))  # fmt: skip
        broker.stop()
    finally:
        broker.discard(keep=args.keep)


if __name__ == "__main__":
    main()
