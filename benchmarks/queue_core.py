"""Queue core throughput without a network: publish, then basic.get + ack, 200-byte bodies.

Prints messages per second for a transient queue, a durable queue with fsync never, and a
durable queue with fsync always (every publish confirmed after group commit).

    .venv/bin/python benchmarks/queue_core.py [messages]
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from wharf.core.clock import Clock
from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.core.message import Message
from wharf.core.vhost_registry import VhostRegistry


async def run(n: int, fsync: FsyncPolicy, durable: bool) -> None:
    path = Path(tempfile.mkdtemp(prefix="wharf-bench-"))
    try:
        reg = await VhostRegistry.open(path, BrokerConfig(fsync=fsync), Clock(), start_timer=False)
        vhost = reg["/"]
        queue = await vhost.declare_queue("q", durable=durable)
        message = Message.build("", "q", b"x" * 200, persistent=True)
        start = time.perf_counter()
        results = [vhost.publish_nowait(message) for _ in range(n)]
        await asyncio.gather(*(r.wait_durable() for r in results))
        published = time.perf_counter()
        for _ in range(n // 100):
            deliveries = [queue.basic_get(no_ack=False) for _ in range(100)]
            queue.ack([d.delivery_id for d in deliveries if d is not None])
        consumed = time.perf_counter()
        await reg.close()
        print(
            f"fsync={fsync.value:<8} durable={durable!s:<5} "
            f"publish {n / (published - start):>9,.0f} msg/s   "
            f"get+ack {n / (consumed - published):>9,.0f} msg/s"
        )
    finally:
        shutil.rmtree(path, ignore_errors=True)


async def main(n: int) -> None:
    await run(n, FsyncPolicy.NEVER, False)
    await run(n, FsyncPolicy.NEVER, True)
    await run(n, FsyncPolicy.ALWAYS, True)


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 20_000))
