"""FastStream's RabbitBroker and KafkaBroker against Wharf (not its in-memory test brokers):
subscribers receive what the app publishes, an RPC request gets its answer over direct
reply-to, and a worker killed mid-message leaves it to the next worker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from faststream.kafka import KafkaBroker
from faststream.rabbit import RabbitBroker, RabbitQueue
from worker_process import BOUND_S, WorkerProcess

pytestmark = [pytest.mark.interop]

# The child's app: the subscriber marks each start, and finishes only on its second one.
WORKER = """
import asyncio, sys
from pathlib import Path
from faststream.rabbit import RabbitBroker
url, state = sys.argv[1], Path(sys.argv[2])

async def main() -> None:
    broker = RabbitBroker(url)

    @broker.subscriber("jobs")
    async def handle(body: str) -> None:
        n = len(list(state.glob("started-*"))) + 1
        (state / f"started-{n}").write_text(body)
        if n == 1:
            await asyncio.sleep(3600)  # killed here
        (state / "done").write_text(body)

    async with broker:
        await broker.start()
        await asyncio.Event().wait()

asyncio.run(main())
"""


async def test_rabbit_subscriber_and_rpc(wharf_broker: Any) -> None:
    broker = RabbitBroker(wharf_broker.amqp_url)
    received: asyncio.Queue[str] = asyncio.Queue()

    @broker.subscriber("orders")
    async def handle(body: str) -> None:
        await received.put(body)

    @broker.subscriber("prices")
    async def price(body: str) -> str:
        return f"price of {body}: 42"

    async with broker:
        await broker.start()
        await broker.publish("order 1", queue="orders")
        assert await asyncio.wait_for(received.get(), BOUND_S) == "order 1"
        answer = await broker.request("tea", queue="prices", timeout=BOUND_S)
        assert await answer.decode() == "price of tea: 42"


async def test_kafka_subscriber(wharf_broker: Any) -> None:
    topic = wharf_broker.topic("orders")
    broker = KafkaBroker(wharf_broker.kafka_bootstrap)
    received: asyncio.Queue[str] = asyncio.Queue()

    @broker.subscriber(topic, group_id=wharf_broker.group("shop"), auto_offset_reset="earliest")
    async def handle(body: str) -> None:
        await received.put(body)

    async with broker:
        await broker.start()
        for i in range(3):
            await broker.publish(f"order {i}", topic=topic)
        got = [await asyncio.wait_for(received.get(), BOUND_S) for _ in range(3)]
        assert got == ["order 0", "order 1", "order 2"]


async def test_a_worker_killed_mid_message_leaves_it_to_the_next(
    wharf_broker: Any, tmp_path: Path
) -> None:
    publisher = RabbitBroker(wharf_broker.amqp_url)
    async with publisher:
        await publisher.start()
        await publisher.declare_queue(RabbitQueue("jobs"))
        await publisher.publish("job-1", queue="jobs")

    await asyncio.to_thread(
        WorkerProcess.killed_mid_task, WORKER, tmp_path, wharf_broker.amqp_url
    )
    assert (tmp_path / "started-2").read_text() == "job-1"
    assert not (tmp_path / "started-3").exists()

