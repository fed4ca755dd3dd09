"""Taskiq with its aio-pika broker against Wharf: a receiver runs the tasks a client sends,
including a delayed one (through an ``x-delayed-message`` exchange, RabbitMQ's delayed-message
plugin, which Wharf has built in), and a receiver killed mid-task leaves it to the next."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from taskiq.api import run_receiver_task
from taskiq_aio_pika import AioPikaBroker
from worker_process import BOUND_S, WorkerProcess

pytestmark = [pytest.mark.interop]

# The child's receiver: the task marks each start, and finishes only on its second one.
WORKER = """
import asyncio, sys
from pathlib import Path
from taskiq.api import run_receiver_task
from taskiq_aio_pika import AioPikaBroker
url, state = sys.argv[1], Path(sys.argv[2])
broker = AioPikaBroker(url)
broker.is_worker_process = True

@broker.task(task_name="shop.slow")
async def slow(tag: str) -> None:
    n = len(list(state.glob("started-*"))) + 1
    (state / f"started-{n}").write_text(tag)
    if n == 1:
        await asyncio.sleep(3600)  # killed here
    (state / "done").write_text(tag)

async def main() -> None:
    await broker.startup()
    await run_receiver_task(broker)

asyncio.run(main())
"""


async def test_a_receiver_runs_sent_and_delayed_tasks(wharf_broker: Any) -> None:
    broker = AioPikaBroker(wharf_broker.amqp_url, delayed_message_exchange_plugin=True)
    broker.is_worker_process = True  # this process receives too: open the reading channel
    done: asyncio.Queue[tuple[str, float]] = asyncio.Queue()

    @broker.task(task_name="shop.record")
    async def record(tag: str) -> None:
        await done.put((tag, time.monotonic()))

    await broker.startup()
    receiver = asyncio.create_task(run_receiver_task(broker))
    try:
        sent = time.monotonic()
        await record.kicker().with_labels(delay=1).kiq("later")
        await record.kiq("now")
        first = await asyncio.wait_for(done.get(), BOUND_S)
        second = await asyncio.wait_for(done.get(), BOUND_S)
        assert [first[0], second[0]] == ["now", "later"]
        assert second[1] - sent >= 1.0
    finally:
        receiver.cancel()
        await asyncio.gather(receiver, return_exceptions=True)
        await broker.shutdown()


async def test_a_receiver_killed_mid_task_leaves_it_to_the_next(
    wharf_broker: Any, tmp_path: Path
) -> None:
    client = AioPikaBroker(wharf_broker.amqp_url)

    @client.task(task_name="shop.slow")
    async def slow(tag: str) -> None:
        raise AssertionError("runs in the worker process only")

    await client.startup()  # declares the queue, so that the task waits in it
    try:
        await slow.kiq("job-1")
    finally:
        await client.shutdown()
    await asyncio.to_thread(
        WorkerProcess.killed_mid_task, WORKER, tmp_path, wharf_broker.amqp_url
    )
    assert (tmp_path / "started-2").read_text() == "job-1"
    assert not (tmp_path / "started-3").exists()
