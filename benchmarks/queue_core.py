"""Queue core throughput and CPU cost without a network, 200-byte bodies.

Each message is built from property bytes as the AMQP front end builds it (a new
``Message`` per publish, delivery-mode 2 and a content type). Scenarios:

* ``publish+confirm``: publish ``n`` messages in bursts of 100 per event-loop iteration (what
  one socket read of pipelined publishes gives), and await every publisher confirm in order
  from one task (as a channel's confirm loop does);
* ``push+ack``: then a consumer with prefetch 200 takes them all, acking every 50 deliveries;
* ``live``: publisher and consumer at once (the queue stays short: each message is pushed to
  the consumer as it is enqueued), confirms awaited, acks every 50;
* ``get+ack``: basic.get then ack, 100 at a time.

For each: wall-clock messages per second (the machine may be shared, so this is noisy) and
process CPU microseconds per message (user + system, including the fsync thread; steadier).
Then a deep durable queue: body bytes kept in memory, Python heap growth per message, and
``push+ack`` draining it (most bodies read back from the log).

    .venv/bin/python benchmarks/queue_core.py [messages]
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path

from wharf.core.clock import Clock
from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.queues.consumers import Delivery
from wharf.core.queues.message import Message
from wharf.core.queues.queue import Queue
from wharf.core.queues.registry import VhostRegistry
from wharf.core.queues.router import PublishResult
from wharf.core.queues.vhost import VirtualHost
from wharf.core.users import UserStore

BODY = b"x" * 200
PROPS = Message.build("", "q", b"", persistent=True, content_type="text/plain").properties
BURST = 100
ACK_EVERY = 50


class BenchConsumer:
    """Prefetch-limited consumer that acks every ``ACK_EVERY`` deliveries."""

    def __init__(self, prefetch: int) -> None:
        self.prefetch = prefetch
        self.outstanding: list[int] = []
        self.unacked = 0
        self.received = 0
        self.done = asyncio.Event()
        self.target = 0
        self.queue: Queue | None = None

    @property
    def tag(self) -> str:
        return "bench"

    @property
    def no_ack(self) -> bool:
        return False

    @property
    def exclusive(self) -> bool:
        return False

    def can_take(self) -> bool:
        return self.unacked < self.prefetch

    def deliver(self, delivery: Delivery) -> None:
        self.outstanding.append(delivery.delivery_id)
        self.unacked += 1
        self.received += 1
        if len(self.outstanding) >= ACK_EVERY:
            asyncio.get_running_loop().call_soon(self.ack)
        if self.received >= self.target:
            asyncio.get_running_loop().call_soon(self.ack)

    def ack(self) -> None:
        if not self.outstanding or self.queue is None:
            return
        ids, self.outstanding = self.outstanding, []
        self.unacked -= len(ids)
        self.queue.ack(ids)
        if self.received >= self.target and not self.unacked:
            self.done.set()

    def cancelled(self, queue: Queue) -> None:
        pass


async def publish_and_confirm(vhost: VirtualHost, n: int) -> None:
    pending: asyncio.Queue[PublishResult | None] = asyncio.Queue()

    async def confirm_loop() -> None:
        while (result := await pending.get()) is not None:
            await result.wait_durable()

    confirmer = asyncio.get_running_loop().create_task(confirm_loop())
    for start in range(0, n, BURST):
        for _ in range(min(BURST, n - start)):
            pending.put_nowait(vhost.publish_nowait(Message("", "q", PROPS, BODY)))
        await asyncio.sleep(0)
    pending.put_nowait(None)
    await confirmer


async def consume(queue: Queue, n: int) -> None:
    consumer = BenchConsumer(prefetch=200)
    consumer.target = n
    consumer.queue = queue
    queue.add_consumer(consumer)
    await consumer.done.wait()
    queue.remove_consumer(consumer)


async def live(vhost: VirtualHost, queue: Queue, n: int) -> None:
    consumer = BenchConsumer(prefetch=200)
    consumer.target = n
    consumer.queue = queue
    queue.add_consumer(consumer)
    await publish_and_confirm(vhost, n)
    await consumer.done.wait()
    queue.remove_consumer(consumer)


async def get_and_ack(queue: Queue, n: int) -> None:
    for _ in range(n // 100):
        deliveries = [queue.basic_get(no_ack=False) for _ in range(100)]
        queue.ack([d.delivery_id for d in deliveries if d is not None])


async def measure(label: str, n: int, step: Callable[[], Awaitable[None]]) -> None:
    gc.collect()
    wall, cpu = time.perf_counter(), time.process_time()
    await step()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    print(f"  {label:<16} {n / wall:>9,.0f} msg/s   {cpu / n * 1e6:>6.1f} us CPU/msg")


async def run(n: int, fsync: FsyncPolicy, durable: bool) -> None:
    print(f"fsync={fsync.value} durable={durable}")
    path = Path(tempfile.mkdtemp(prefix="wharf-bench-"))
    try:
        reg = await VhostRegistry.open(
            path, BrokerConfig(fsync=fsync), Clock(), UserStore.with_defaults(), start_timer=False
        )
        vhost = reg["/"]
        queue = await vhost.declare_queue("q", durable=durable)
        await measure("publish+confirm", n, lambda: publish_and_confirm(vhost, n))
        await measure("push+ack", n, lambda: consume(queue, n))
        await measure("live", n, lambda: live(vhost, queue, n))
        await publish_and_confirm(vhost, n)
        await measure("get+ack", n, lambda: get_and_ack(queue, n))
        await reg.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def deep_queue(n: int) -> None:
    """Memory of a durable queue holding ``n`` unconsumed messages."""
    path = Path(tempfile.mkdtemp(prefix="wharf-bench-"))
    try:
        config = BrokerConfig(fsync=FsyncPolicy.NEVER)
        reg = await VhostRegistry.open(
            path, config, Clock(), UserStore.with_defaults(), start_timer=False
        )
        vhost = reg["/"]
        queue = await vhost.declare_queue("q", durable=True)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for start in range(0, n, BURST):
            for _ in range(min(BURST, n - start)):
                body = bytes(bytearray(BODY))  # its own object, as a body read from a socket
                vhost.publish_nowait(Message("", "q", PROPS, body))
            await asyncio.sleep(0)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        resident = getattr(queue, "resident_bytes", queue.message_bytes)
        print(
            f"deep durable queue, {n:,} x {len(BODY)} B ready: bodies in memory "
            f"{resident / 2**20:,.1f} MiB of {queue.message_bytes / 2**20:,.1f} MiB, "
            f"heap growth {grown / 2**20:,.1f} MiB ({grown / n:,.0f} B/msg)"
        )
        await measure("push+ack (deep)", n, lambda: consume(queue, n))
        await reg.close()
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def main(n: int) -> None:
    await run(n, FsyncPolicy.NEVER, False)
    await run(n, FsyncPolicy.NEVER, True)
    await run(n, FsyncPolicy.ALWAYS, True)
    await deep_queue(max(n * 5, 100_000))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))
