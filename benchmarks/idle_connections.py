"""What many idle AMQP connections cost Wharf (issue 15).

Starts ``wharf serve`` (fsync always, a fresh data directory), then:

1. a working client (pika, one connection, one channel, publisher confirms) publishes persistent
   100-byte messages into a durable queue, one at a time, each waiting for its confirm, for
   ``--seconds``: the baseline rate;
2. a second process opens ``--connections`` AMQP connections with aiormq (the connection
   library under aio-pika), ``--heartbeat`` seconds negotiated, ``--open-at-once`` handshakes
   in flight, and then holds them, answering heartbeats, doing nothing else;
3. the broker's RSS and open files, and its CPU use while the connections sit idle;
4. the working client again, beside the idle connections; then once more after they are
   closed. The rate beside them is printed as a share of the mean of the two rates alone
   (the first run also warms the broker up).

Run: ``python benchmarks/idle_connections.py --connections 10000``.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pika
from scaling import Broker, idle_cpu, resources

READY = "holding"


def publish_rate(port: int, seconds: float) -> float:
    """Confirmed persistent publishes per second over ``seconds``."""
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    channel = connection.channel()
    channel.queue_declare("work", durable=True)
    channel.confirm_delivery()
    persistent = pika.BasicProperties(delivery_mode=2)
    body = b"x" * 100
    count = 0
    began = time.perf_counter()
    while time.perf_counter() - began < seconds:
        channel.basic_publish("", "work", body, persistent)
        count += 1
    rate = count / (time.perf_counter() - began)
    channel.queue_purge("work")
    connection.close()
    return rate


async def hold(port: int, count: int, heartbeat: int, at_once: int) -> None:
    """Open ``count`` connections, say so on stdout, then hold them until stdin closes."""
    import aiormq

    url = f"amqp://guest:guest@127.0.0.1:{port}/?heartbeat={heartbeat}"
    gate = asyncio.Semaphore(at_once)
    connections: list[aiormq.Connection] = []

    async def open_one() -> None:
        async with gate:
            connections.append(await aiormq.connect(url))

    began = time.perf_counter()
    await asyncio.gather(*(open_one() for _ in range(count)))
    print(f"{READY} {len(connections)} {time.perf_counter() - began:.2f}", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await asyncio.gather(*(c.close() for c in connections), return_exceptions=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--heartbeat", type=int, default=30)
    parser.add_argument("--open-at-once", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--hold", type=int, help=argparse.SUPPRESS)  # the holding process
    args = parser.parse_args()
    if args.hold is not None:
        asyncio.run(hold(args.hold, args.connections, args.heartbeat, args.open_at_once))
        return
    broker = Broker(Path(tempfile.mkdtemp(prefix="wharf-idle-connections-")))
    try:
        broker.start()
        print(f"wharf, {args.connections} idle AMQP connections (aiormq, heartbeat "
              f"{args.heartbeat} s) beside one confirmed publisher (pika)", flush=True)  # fmt: skip
        baseline = publish_rate(broker.port, args.seconds)
        print(f"  alone: {baseline:.0f} confirmed publishes/s; {resources(broker.pid)}",
              flush=True)  # fmt: skip
        holder = subprocess.Popen(
            [sys.executable, __file__, "--hold", str(broker.port),
             "--connections", str(args.connections), "--heartbeat", str(args.heartbeat),
             "--open-at-once", str(args.open_at_once)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert holder.stdout is not None and holder.stdin is not None
        line = holder.stdout.readline().split()
        if not line or line[0] != READY:
            raise SystemExit("the connections were not opened")
        print(f"  {line[1]} connections opened in {line[2]} s "
              f"({int(line[1]) / float(line[2]):.0f}/s)", flush=True)  # fmt: skip
        time.sleep(2)
        print(f"  holding them: {resources(broker.pid)}; idle CPU "
              f"{idle_cpu(broker.pid, 10):.3f} s/s", flush=True)  # fmt: skip
        beside = publish_rate(broker.port, args.seconds)
        print(f"  beside them: {beside:.0f} confirmed publishes/s; {resources(broker.pid)}",
              flush=True)  # fmt: skip
        holder.stdin.close()
        holder.wait(120)
        time.sleep(2)
        after = publish_rate(broker.port, args.seconds)
        alone = (baseline + after) / 2
        print(f"  alone again, once they were closed: {after:.0f} confirmed publishes/s; "
              f"beside them at {beside / alone:.0%} of the mean rate alone",
              flush=True)  # fmt: skip
        broker.stop()
    finally:
        broker.discard(keep=False)


if __name__ == "__main__":
    main()
