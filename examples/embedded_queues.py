"""Wharf's queues API embedded in a Python program: no server, no sockets.

Run it with ``python examples/embedded_queues.py [data-dir]``; without an argument it uses a
temporary directory. It declares a priority queue with a dead-letter exchange, publishes tasks,
consumes them with a prefetch of one, acks one, rejects one to the dead-letter exchange and
reads it there with its x-death header, shows a message coming back redelivered after the
consume block is left without settling it, and finds an unsettled message again after the
broker is reopened.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from wharf.core.broker import Broker

TASKS = [("resize image", 1), ("send invoice", 5), ("rebuild index", 1), ("page on-call", 9)]


async def main(data_dir: Path) -> None:
    async with Broker.open(data_dir) as broker:
        # rejected tasks go to the fanout exchange tasks.dlx, which routes them to tasks.dead
        await broker.declare_exchange("tasks.dlx", "fanout")
        await broker.declare_queue("tasks.dead")
        await broker.bind_queue("tasks.dead", "tasks.dlx")
        await broker.declare_queue(
            "tasks", arguments={"x-max-priority": 9, "x-dead-letter-exchange": "tasks.dlx"}
        )
        for name, priority in TASKS:
            # returns once the (persistent) message is on disk
            await broker.publish("tasks", name.encode(), priority=priority, headers={"team": "ops"})
            print(f"published {name!r} with priority {priority}")

        # prefetch=1: one message at a time is handed out and not yet settled
        async with broker.consume("tasks", prefetch=1) as messages:
            async for message in messages:
                print(f"received {message.body!r} (priority {message.priority})")
                if message.body == b"page on-call":
                    await message.ack()
                    print("  acked")
                else:
                    await message.reject(requeue=False)
                    print("  rejected to the dead-letter exchange")
                    break
        # the credit of that reject fetched the next task; leaving the block gave it back
        tasks = broker.queue("tasks")
        print(f"left the block: {tasks.message_count} ready, {tasks.unacked_count} unacked")

        dead = await broker.get("tasks.dead")
        assert dead is not None
        (death,) = dead.headers["x-death"]
        print(
            f"dead-lettered {dead.body!r}: x-death reason={death['reason']} "
            f"queue={death['queue']} count={death['count']}; team={dead.headers['team']}"
        )
        await dead.ack()

        async with broker.consume("tasks", prefetch=10) as messages:
            async for message in messages:
                print(
                    f"received {message.body!r} redelivered={message.redelivered} "
                    f"delivery_count={message.delivery_count}"
                )
                if message.body == b"resize image":
                    await message.ack()
                    print("  acked")
                else:
                    print("  left unsettled")
                    break

    # a new broker over the same directory: the unsettled task is back, the acked ones are gone
    async with Broker.open(data_dir) as broker:
        print(f"reopened: {broker.queue('tasks').message_count} ready in tasks")
        message = await broker.get("tasks")
        assert message is not None
        print(f"got {message.body!r} redelivered={message.redelivered}")
        await message.ack()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(Path(sys.argv[1])))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(main(Path(tmp)))
