"""Dramatiq's RabbitMQ broker against Wharf: an actor runs, a failing one is retried after its
backoff, a delayed message waits, and a worker killed mid-task leaves the message to the next
worker. Workers are Dramatiq's own ``Worker`` in a child process (or in this one)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import AgeLimit, Callbacks, Pipelines, Retries, TimeLimit
from worker_process import BOUND_S, WorkerProcess

pytestmark = [pytest.mark.interop]

# The child's worker: the task "slow" marks each start, and finishes only on its second one.
WORKER = """
import sys, time
from pathlib import Path
import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
url, state = sys.argv[1], Path(sys.argv[2])
broker = RabbitmqBroker(url=url)
dramatiq.set_broker(broker)

@dramatiq.actor(queue_name="jobs", max_retries=0)
def slow(tag: str) -> None:
    n = len(list(state.glob("started-*"))) + 1
    (state / f"started-{n}").write_text(tag)
    if n == 1:
        time.sleep(3600)  # killed here
    (state / "done").write_text(tag)

worker = dramatiq.Worker(broker, worker_threads=1)
worker.start()
while True:
    time.sleep(1)
"""


@pytest.fixture
def broker(wharf_broker: Any) -> Iterator[RabbitmqBroker]:
    # no Prometheus or shutdown middleware: only what these tests use
    middleware = [AgeLimit(), TimeLimit(), Callbacks(), Pipelines(), Retries(min_backoff=100)]
    rabbit = RabbitmqBroker(url=wharf_broker.amqp_url, middleware=middleware)
    dramatiq.set_broker(rabbit)
    yield rabbit
    rabbit.close()


def _wait(what: str, condition: Any) -> None:
    deadline = time.monotonic() + BOUND_S
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_actors_run_retry_and_wait_for_their_delay(broker: RabbitmqBroker) -> None:
    calls: list[str] = []

    @dramatiq.actor(queue_name="tasks", max_retries=3, min_backoff=100, max_backoff=200)
    def flaky(tag: str) -> None:
        calls.append(tag)
        if calls.count(tag) == 1 and tag == "retry":
            raise RuntimeError("first attempt fails")

    worker = dramatiq.Worker(broker, worker_timeout=100, worker_threads=1)
    worker.start()
    try:
        flaky.send("now")
        sent = time.monotonic()
        flaky.send_with_options(args=("later",), delay=1500)
        flaky.send("retry")
        _wait("all three ran", lambda: sorted(set(calls)) == ["later", "now", "retry"])
        assert time.monotonic() - sent >= 1.5  # the delayed one waited its delay
        assert calls.count("retry") == 2 and calls.count("now") == 1
        assert calls.index("later") > calls.index("now")
    finally:
        worker.stop()


def test_a_worker_killed_mid_task_leaves_the_message_to_the_next(
    wharf_broker: Any, tmp_path: Path
) -> None:
    rabbit = RabbitmqBroker(url=wharf_broker.amqp_url)
    try:
        rabbit.declare_queue("jobs")
        rabbit.enqueue(dramatiq.Message(
            queue_name="jobs", actor_name="slow", args=("job-1",), kwargs={}, options={}
        ))  # fmt: skip
    finally:
        rabbit.close()

    WorkerProcess.killed_mid_task(WORKER, tmp_path, wharf_broker.amqp_url)
    assert (tmp_path / "started-2").read_text() == "job-1"
    assert (tmp_path / "done").read_text() == "job-1"
    assert not (tmp_path / "started-3").exists()
