"""AMQP 0-9-1 load with pika, for the cluster benchmarks: confirmed publish, consume, latency.

- :func:`publish`: persistent messages to a durable queue with publisher confirms, up to
  ``window`` unconfirmed (pika's ``SelectConnection``, so publishing never waits for a confirm);
  the rate is confirmed messages over the time from the first publish to the last confirm. The
  broker confirms in order, so a confirm's delivery tag is the count confirmed so far.
- :func:`consume`: prefetch 1000, ``basic_ack(multiple=True)`` every 250; the rate is messages
  over the time from the first to the last delivery.
- :func:`latency`: a publisher thread sends persistent messages at a fixed rate carrying their
  send time (no confirms: a quorum queue delivers a message only once a majority has it); the
  consumer (on ``consume_port`` if given, another node of a cluster) records receive time minus
  send time; the first second is dropped.

``queue_arguments`` selects the queue type, e.g. ``{"x-queue-type": "quorum"}``.
"""

from __future__ import annotations

import struct
import threading
import time
from typing import Any

import pika
from pika.adapters.select_connection import SelectConnection
from pika.channel import Channel
from pika.spec import Basic, BasicProperties

PERSISTENT = BasicProperties(delivery_mode=2)


def _parameters(port: int) -> pika.ConnectionParameters:
    return pika.ConnectionParameters("127.0.0.1", port, heartbeat=0, blocked_connection_timeout=60)


def declare(port: int, queue: str, queue_arguments: dict[str, Any]) -> None:
    connection = pika.BlockingConnection(_parameters(port))
    connection.channel().queue_declare(queue, durable=True, arguments=queue_arguments)
    connection.close()


def publish_one(port: int, queue: str) -> None:
    connection = pika.BlockingConnection(_parameters(port))
    channel = connection.channel()
    channel.confirm_delivery()
    channel.basic_publish("", queue, b"probe", PERSISTENT)
    connection.close()


def queued(port: int, queue: str) -> int:
    """How many messages ``queue`` holds, as the broker at ``port`` sees it (an error when it
    does not know the queue)."""
    connection = pika.BlockingConnection(_parameters(port))
    found = connection.channel().queue_declare(queue, passive=True)
    connection.close()
    return int(found.method.message_count)


def publish(
    port: int, queue: str, size: int, seconds: float, window: int = 1000
) -> dict[str, float]:
    payload = b"x" * size
    state = {"published": 0, "confirmed": 0, "nacked": 0}
    times = {"start": 0.0, "last": 0.0}
    channel_box: list[Channel] = []

    def fill() -> None:
        channel = channel_box[0]
        now = time.perf_counter()
        if now >= times["start"] + seconds:
            if state["confirmed"] + state["nacked"] >= state["published"]:
                connection.close()
            return
        while state["published"] - state["confirmed"] - state["nacked"] < window:
            channel.basic_publish("", queue, payload, PERSISTENT)
            state["published"] += 1

    def on_confirm(frame: Any) -> None:
        method = frame.method
        done = method.delivery_tag - state["confirmed"] - state["nacked"]
        if isinstance(method, Basic.Ack):
            state["confirmed"] += done
        else:
            state["nacked"] += done
        times["last"] = time.perf_counter()
        fill()

    def on_channel(channel: Channel) -> None:
        channel_box.append(channel)
        channel.confirm_delivery(on_confirm)
        times["start"] = time.perf_counter()
        fill()

    connection = SelectConnection(
        _parameters(port),
        on_open_callback=lambda conn: conn.channel(on_open_callback=on_channel),
        on_close_callback=lambda conn, reason: conn.ioloop.stop(),
    )
    connection.ioloop.start()
    took = max(times["last"] - times["start"], 1e-9)
    return {
        "msgs_per_s": state["confirmed"] / took,
        "acked": state["confirmed"],
        "failed": state["nacked"],
    }


def consume(port: int, queue: str, count: int, timeout_s: float = 120.0) -> dict[str, float]:
    connection = pika.BlockingConnection(_parameters(port))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1000)
    got = {"n": 0, "first": 0.0, "last": 0.0}

    def on_message(ch: Any, method: Any, _props: Any, _body: bytes) -> None:
        if got["n"] == 0:
            got["first"] = time.perf_counter()
        got["n"] += 1
        got["last"] = time.perf_counter()
        if got["n"] % 250 == 0 or got["n"] >= count:
            ch.basic_ack(method.delivery_tag, multiple=True)

    channel.basic_consume(queue, on_message)
    deadline = time.monotonic() + timeout_s
    while got["n"] < count and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.2)
    connection.close()
    return {"msgs_per_s": got["n"] / max(got["last"] - got["first"], 1e-9), "received": got["n"]}


def latency(
    port: int, queue: str, size: int, seconds: float, rate: float = 1000.0,
    consume_port: int | None = None,
) -> dict[str, float]:
    padding = b"\0" * max(0, size - 8)
    total = int(rate * seconds)

    def send() -> None:
        connection = pika.BlockingConnection(_parameters(port))
        channel = connection.channel()
        start = time.perf_counter()
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            channel.basic_publish("", queue, struct.pack(">d", time.time()) + padding, PERSISTENT)
        connection.close()

    receiver = port if consume_port is None else consume_port
    connection = pika.BlockingConnection(_parameters(receiver))
    channel = connection.channel()
    channel.basic_qos(prefetch_count=1000)
    samples: list[tuple[float, float]] = []

    def on_message(ch: Any, method: Any, _props: Any, body: bytes) -> None:
        now = time.time()
        (sent_at,) = struct.unpack(">d", body[:8])
        samples.append((sent_at, now - sent_at))
        if len(samples) % 100 == 0:
            ch.basic_ack(method.delivery_tag, multiple=True)

    channel.basic_consume(queue, on_message)
    sender = threading.Thread(target=send)
    sender.start()
    deadline = time.monotonic() + seconds + 30
    while len(samples) < total and time.monotonic() < deadline:
        connection.process_data_events(time_limit=0.2)
    sender.join()
    connection.close()
    warm = samples[0][0] + 1.0 if samples else 0.0
    kept = sorted(lat for sent_at, lat in samples if sent_at >= warm)
    if not kept:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "samples": 0}
    return {
        "p50_ms": kept[len(kept) // 2] * 1000,
        "p99_ms": kept[min(len(kept) - 1, int(0.99 * len(kept)))] * 1000,
        "max_ms": kept[-1] * 1000,
        "samples": len(kept),
        "lost": total - len(samples),
    }
