"""Confirmed publish and consume through two nodes of a running Wharf cluster, with aio-pika.

    python scripts/local_cluster.py --nodes 2 --amqp-port 15672 &
    python benchmarks/cluster_amqp_queues.py --publish amqp://guest:guest@127.0.0.1:15672/ \\
        --consume amqp://guest:guest@127.0.0.1:15673/ --count 20000 --size 100

A publisher on the first node keeps ``--window`` confirmed publishes outstanding (pipelined
confirms) while a consumer on the second node, in a process of its own so that the two clients
do not share one CPU (prefetch ``--prefetch``, acks with ``multiple`` every 100 messages),
takes them. Prints publish msg/s (to the last confirm), consume msg/s (from the first publish
to the last delivery).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import time
from multiprocessing.synchronize import Event

import aio_pika


async def consume(url: str, queue_name: str, count: int, prefetch: int, ready: Event) -> float:
    """Take ``count`` messages; returns the time (perf_counter) of the last one."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=prefetch)
        queue = await channel.declare_queue(queue_name, passive=True)
        received = 0
        done = asyncio.Event()
        last = 0.0

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal received, last
            received += 1
            if received % 100 == 0 or received == count:
                await message.ack(multiple=True)
            if received == count:
                last = time.perf_counter()
                done.set()

        await queue.consume(on_message)
        ready.set()
        await asyncio.wait_for(done.wait(), timeout=600)
        return last
    finally:
        await connection.close()


def consumer_process(url: str, queue_name: str, count: int, prefetch: int, ready: Event,
                     result: multiprocessing.Queue[float]) -> None:  # fmt: skip
    result.put(asyncio.run(consume(url, queue_name, count, prefetch, ready)))


async def publish(args: argparse.Namespace, queue_name: str, consumer_ready: Event) -> float:
    """Declare the queue, wait for the consumer, publish; returns the start time."""
    connection = await aio_pika.connect(args.publish)
    try:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue(queue_name, durable=True)
        process = multiprocessing.Process(
            target=consumer_process,
            args=(args.consume, queue_name, args.count, args.prefetch, consumer_ready,
                  args.result),
        )  # fmt: skip
        process.start()
        args.process = process
        await asyncio.to_thread(consumer_ready.wait)
        body = b"x" * args.size
        window = asyncio.Semaphore(args.window)

        async def publish_one() -> None:
            async with window:
                await channel.default_exchange.publish(
                    aio_pika.Message(body), routing_key=queue.name
                )

        start = time.perf_counter()
        await asyncio.gather(*(publish_one() for _ in range(args.count)))
        published = time.perf_counter()
        print(f"{args.count} x {args.size} B: publish (confirmed) "
              f"{args.count / (published - start):,.0f} msg/s", end="; ", flush=True)  # fmt: skip
        return start
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--publish", required=True, help="AMQP URL of the publishing node")
    parser.add_argument("--consume", required=True, help="AMQP URL of the consuming node")
    parser.add_argument("--count", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=100)
    parser.add_argument("--window", type=int, default=1000)
    parser.add_argument("--prefetch", type=int, default=1000)
    args = parser.parse_args()
    ready = multiprocessing.Event()
    args.result = multiprocessing.Queue()
    start = asyncio.run(publish(args, f"bench-{time.time_ns()}", ready))
    last = args.result.get(timeout=600)
    args.process.join()
    print(f"consume {args.count / (last - start):,.0f} msg/s")


if __name__ == "__main__":
    main()
