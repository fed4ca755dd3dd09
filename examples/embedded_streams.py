"""Wharf's streams API embedded in a Python program: no server, no sockets.

Run it with ``python examples/embedded_streams.py [data-dir]``; without an argument it uses a
temporary directory. It creates a topic, produces keyed records, reads them back, commits a
consumer group's position, reopens the broker, resumes from the committed offset, and shows a
long-polling fetch waking up when a record arrives.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from wharf.core.broker import Broker


async def main(data_dir: Path) -> None:
    async with Broker.open(data_dir) as broker:
        await broker.create_topic("orders", partitions=3, configs={"retention.ms": "86400000"})
        for n in range(6):
            customer = f"customer-{n % 2}".encode()
            partition, offset = await broker.produce(
                "orders", f"order {n}".encode(), key=customer, headers=[("source", b"example")]
            )
            print(f"produced order {n} for {customer.decode()} -> partition {partition} @ {offset}")

        # the same key always lands on the same partition, so one customer's orders stay in order
        busiest = max(broker.topics.get("orders").partitions, key=lambda p: p.high_watermark)
        records = await broker.fetch("orders", busiest.index, 0, max_records=2)
        for record in records:
            print(f"read partition {busiest.index} @ {record.offset}: {record.value!r}")
        await broker.commit_offsets("billing", {("orders", busiest.index): records[-1].offset + 1})

    # a new broker over the same directory keeps topics, records and the group's position
    async with Broker.open(data_dir) as broker:
        ((_, position),) = broker.committed_offsets("billing").items()
        rest = await broker.fetch("orders", busiest.index, position, max_records=100)
        print(f"resumed billing at offset {position}: {[r.value for r in rest]}")

        # a fetch with a timeout waits for data and wakes up as soon as a record is produced
        end = broker.topics.partition("orders", 0).high_watermark
        waiting = asyncio.create_task(broker.fetch("orders", 0, end, timeout_s=30))
        await asyncio.sleep(0.01)
        await broker.produce("orders", b"late order", partition=0)
        print(f"long poll woke with {[r.value for r in await waiting]}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(Path(sys.argv[1])))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(main(Path(tmp)))
