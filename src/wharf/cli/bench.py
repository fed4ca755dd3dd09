"""`wharf bench`: produce then consume a batch of messages against a running broker.

How it works: the produce phase sends ``--messages`` records of ``--size`` bytes to a topic and
records each one's latency (send to acknowledgement); the consume phase reads them back. With
``--via kafka`` (the default when the confluent-kafka client is installed and the broker reports
a Kafka listener) the Kafka port is used with acks=all, the way applications talk to Wharf;
``--via http`` uses the HTTP API and measures request round trips. Progress is shown live and a
summary gives msg/s, MB/s and latency percentiles for each phase.
"""

from __future__ import annotations

import importlib
import math
import os
import time
from dataclasses import dataclass, field
from enum import StrEnum
from operator import itemgetter
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from wharf.cli.client import (
    DEFAULT_URL,
    CliError,
    JsonOption,
    UrlOption,
    WharfClient,
    reporting_errors,
    segment,
)
from wharf.cli.output import emit, print_table

CONSUME_IDLE_LIMIT_S = 30.0

_SUMMARY_COLUMNS = (
    ("phase", "phase"),
    ("msg/s", "msg_per_s"),
    ("MB/s", "mb_per_s"),
    ("p50 ms", "p50_ms"),
    ("p95 ms", "p95_ms"),
    ("p99 ms", "p99_ms"),
    ("max ms", "max_ms"),
)


class Via(StrEnum):
    AUTO = "auto"
    KAFKA = "kafka"
    HTTP = "http"


@dataclass
class Phase:
    """Figures for one phase (produce or consume)."""

    name: str
    messages: int = 0
    payload_bytes: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        seconds = max(self.seconds, 1e-9)
        result: dict[str, Any] = {
            "phase": self.name,
            "messages": self.messages,
            "seconds": round(self.seconds, 3),
            "msg_per_s": round(self.messages / seconds, 1),
            "mb_per_s": round(self.payload_bytes / seconds / 1e6, 3),
        }
        for label, q in (("p50_ms", 0.50), ("p95_ms", 0.95), ("p99_ms", 0.99)):
            result[label] = (
                round(percentile(self.latencies_ms, q), 3) if self.latencies_ms else None
            )
        result["max_ms"] = round(max(self.latencies_ms), 3) if self.latencies_ms else None
        return result


def percentile(values: list[float], q: float) -> float:
    """The q-quantile by nearest rank."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q * len(ordered) - 1e-9)))
    return ordered[rank - 1]


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]} msg/s"),
        TimeElapsedColumn(),
        console=Console(stderr=True),  # stdout stays clean for --json
        transient=False,
    )


def _advance(progress: Progress, task: TaskID, done: int, since: float) -> None:
    """Show ``done`` messages on ``task`` with the rate since ``since`` (a perf_counter time)."""
    rate = round(done / max(time.perf_counter() - since, 1e-9))
    progress.update(task, completed=done, rate=rate)


def _kafka_address(client: WharfClient) -> str | None:
    overview = client.get("/api/overview")
    for listener in overview["listeners"]:
        if listener["name"] == "kafka" and listener["ready"]:
            return f"{listener['host']}:{listener['port']}"
    return None


def _confluent() -> Any:
    try:
        return importlib.import_module("confluent_kafka")
    except ImportError:
        return None


def _bench_http(
    client: WharfClient, topic: str, count: int, payload: str, progress: Progress
) -> tuple[Phase, Phase]:
    produce = Phase("produce")
    task = progress.add_task("produce (http)", total=count, rate=0)
    path = f"/api/topics/{segment(topic)}/messages"
    started = time.perf_counter()
    first_offset: int | None = None
    for i in range(count):
        t0 = time.perf_counter()
        result = client.post(path, {"value": payload, "partition": 0})
        produce.latencies_ms.append((time.perf_counter() - t0) * 1000)
        if first_offset is None:
            first_offset = result["offset"]
        if i % 100 == 99 or i == count - 1:
            _advance(progress, task, i + 1, started)
    produce.seconds = time.perf_counter() - started
    produce.messages = count
    produce.payload_bytes = count * len(payload)

    consume = Phase("consume")
    task = progress.add_task("consume (http)", total=count, rate=0)
    offset = first_offset or 0
    started = time.perf_counter()
    while consume.messages < count:
        t0 = time.perf_counter()
        result = client.get(
            f"/api/topics/{segment(topic)}/partitions/0/messages",
            offset=offset,
            limit=min(500, count - consume.messages),
        )
        consume.latencies_ms.append((time.perf_counter() - t0) * 1000)
        if not result["messages"]:
            raise CliError("consume phase found fewer messages than were produced")
        consume.messages += len(result["messages"])
        consume.payload_bytes += sum(len(m["value"]) for m in result["messages"])
        offset = result["next_offset"]
        _advance(progress, task, consume.messages, started)
    consume.seconds = time.perf_counter() - started
    return produce, consume


def _bench_kafka(
    kafka: Any, bootstrap: str, topic: str, count: int, size: int, progress: Progress
) -> tuple[Phase, Phase]:
    produce = Phase("produce")
    task = progress.add_task("produce (kafka, acks=all)", total=count, rate=0)
    producer = kafka.Producer(
        {
            "bootstrap.servers": bootstrap,
            "acks": "all",
            "linger.ms": 5,
            "enable.idempotence": False,
            "log.connection.close": False,
        }
    )
    payload = os.urandom(size)
    errors: list[str] = []

    def delivered(sent_at: float) -> Any:
        def callback(err: Any, _msg: Any) -> None:
            if err is not None:
                errors.append(str(err))
                return
            produce.latencies_ms.append((time.perf_counter() - sent_at) * 1000)
            produce.messages += 1

        return callback

    started = time.perf_counter()
    for i in range(count):
        while True:
            try:
                producer.produce(topic, payload, on_delivery=delivered(time.perf_counter()))
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
        if i % 500 == 499:
            _advance(progress, task, produce.messages, started)
    producer.flush(60)
    produce.seconds = time.perf_counter() - started
    produce.payload_bytes = produce.messages * size
    progress.update(
        task, completed=produce.messages, rate=round(produce.messages / produce.seconds)
    )
    if errors:
        raise CliError(f"{len(errors)} produce errors, first: {errors[0]}")

    consume = Phase("consume")
    task = progress.add_task("consume (kafka)", total=count, rate=0)
    consumer = kafka.Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"wharf-bench-{os.getpid()}-{time.time_ns()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "log.connection.close": False,
        }
    )
    # The clock starts when the group assigns the partitions: joining is not reading.
    assigned_at: list[float] = []
    consumer.subscribe([topic], on_assign=lambda *_: assigned_at.append(time.perf_counter()))
    idle_since = time.perf_counter()
    try:
        while consume.messages < count:
            batch = consumer.consume(num_messages=500, timeout=0.5)
            if not batch:
                if time.perf_counter() - idle_since > CONSUME_IDLE_LIMIT_S:
                    raise CliError("consume phase stalled: no messages for 30 s")
                continue
            idle_since = time.perf_counter()
            for message in batch:
                if message.error() is None:
                    consume.messages += 1
                    consume.payload_bytes += len(message.value() or b"")
            _advance(progress, task, consume.messages, assigned_at[0])
    finally:
        consumer.close()
    consume.seconds = time.perf_counter() - assigned_at[0]
    return produce, consume


def bench(
    messages: Annotated[
        int,
        typer.Option("--messages", "-n", min=1, help="Messages to produce, then consume."),
    ] = 10_000,
    size: Annotated[int, typer.Option("--size", "-s", min=1, help="Payload bytes.")] = 100,
    partitions: Annotated[
        int,
        typer.Option("--partitions", min=1, help="Partitions of the topic it creates."),
    ] = 1,
    topic: Annotated[
        str | None, typer.Option("--topic", help="Default: a fresh wharf-bench-<time> topic.")
    ] = None,
    via: Annotated[Via, typer.Option("--via", help="auto prefers the Kafka port.")] = Via.AUTO,
    keep: Annotated[bool, typer.Option("--keep", help="Keep the bench topic afterwards.")] = False,
    url: UrlOption = DEFAULT_URL,
    as_json: JsonOption = False,
) -> None:
    """Measure produce and consume throughput and latency against a running broker."""
    name = topic or f"wharf-bench-{time.time_ns()}"
    with reporting_errors(), WharfClient(url) as client:
        created = False
        if not client.probe(f"/api/topics/{segment(name)}", {}):
            client.post("/api/topics", {"name": name, "partitions": partitions})
            created = True
        kafka = _confluent() if via is not Via.HTTP else None
        bootstrap = _kafka_address(client) if kafka is not None else None
        if via is Via.KAFKA and (kafka is None or bootstrap is None):
            raise CliError("--via kafka needs confluent-kafka installed and a Kafka listener")
        try:
            with _progress() as progress:
                if kafka is not None and bootstrap is not None:
                    used = "kafka"
                    phases = _bench_kafka(kafka, bootstrap, name, messages, size, progress)
                else:
                    used = "http"
                    phases = _bench_http(client, name, messages, "x" * size, progress)
        finally:
            if created and not keep:
                client.delete(f"/api/topics/{segment(name)}")
    rows = [phase.summary() for phase in phases]
    emit(
        as_json,
        {"via": used, "topic": name, "size": size, "phases": rows},
        lambda: print_table(
            f"wharf bench via {used}: {messages} messages of {size} bytes",
            [(label, itemgetter(key)) for label, key in _SUMMARY_COLUMNS],
            rows,
        ),
    )
