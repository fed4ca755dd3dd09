"""Celery over py-amqp against Wharf: a worker runs tasks, retries them after a countdown (ETA
messages the worker holds), runs a chain, a group and a chord, and a worker killed with -9
mid-task leaves the task to the next worker.

Results come back over ``rpc://``, which needs nothing but the broker. Celery refuses chords on
``rpc://`` (``RPCBackend.ensure_chords_allowed`` raises "The "rpc" result backend does not
support chords!"), so the chord runs with Celery's file-system result backend, the one of its
chord-capable backends that needs no other server or package. Celery then completes the chord
with its ``celery.chord_unlock`` task, which polls the header's results and retries itself with a
countdown: ETA messages again.

Settings are what a deployment that must not lose a task uses: ``task_acks_late=True`` (the
message is acknowledged after the task, not before) and ``worker_prefetch_multiplier=1``. With a
prefetch of one, a task held for its countdown would block the worker unless Celery raises the
channel's prefetch count while it holds it (basic.qos on a consuming channel), which it does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, Task, chain, chord, group
from celery.backends.rpc import RPCBackend
from celery.contrib.testing.worker import start_worker
from worker_process import BOUND_S, WorkerProcess

pytestmark = [pytest.mark.interop]

SETTINGS: dict[str, Any] = {
    "broker_connection_retry_on_startup": True,
    "task_acks_late": True,
    "worker_prefetch_multiplier": 1,
    "worker_hijack_root_logger": False,
    # a short heartbeat wakes the in-process worker's loop often, so that it stops promptly
    # (and has py-amqp and Wharf exchange heartbeats both ways)
    "broker_heartbeat": 2,
}

# The child's worker, with Celery's default prefork pool (one pool process): the worker process
# receives the message and acknowledges it as the task_acks_late setting says, the pool process
# runs the task; the kill takes both. The task marks each start, and finishes only on its second.
# (With the solo pool the setting would not show: that worker sends even an early ack from its
# event loop, which the task blocks, so it never leaves before the kill.)
WORKER = """
import sys, time
from pathlib import Path
from celery import Celery
url, state = sys.argv[1], Path(sys.argv[2])
app = Celery("shop", broker=url, backend="rpc://")
app.conf.update(
    broker_connection_retry_on_startup=True, task_acks_late=True, worker_prefetch_multiplier=1
)

@app.task(name="shop.slow")
def slow(tag: str) -> str:
    n = len(list(state.glob("started-*"))) + 1
    (state / f"started-{n}").write_text(tag)
    if n == 1:
        time.sleep(3600)  # killed here
    (state / "done").write_text(tag)
    return f"{tag} done"

app.worker_main(["worker", "--pool=prefork", "--concurrency=1", "--loglevel=INFO"])
"""


@pytest.fixture(autouse=True)
def _restore_root_log_level() -> Iterator[None]:
    """Celery's in-process worker sets the root logger to its own level; give it back."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


# The tests' tasks are declared with shared=False: a shared task (the default) is added to every
# Celery app made afterwards, and a later test's task of the same name would then collide.
@contextmanager
def _app(amqp_url: str, backend: str) -> Iterator[Celery]:
    app = Celery("shop", broker=amqp_url, backend=backend)
    app.conf.update(SETTINGS)
    try:
        yield app
    finally:
        # The rpc:// backend's result consumer keeps a connection of its own that app.close()
        # leaves open; only its stop() closes it (and fails if it never started).
        backend = app.backend
        if isinstance(backend, RPCBackend) and backend.result_consumer._consumer is not None:
            backend.result_consumer.stop()
        app.close()


@pytest.fixture
def rpc_app(wharf_broker: Any) -> Iterator[Celery]:
    with _app(wharf_broker.amqp_url, "rpc://") as app:
        yield app


def test_tasks_results_errors_and_retries_after_a_countdown(rpc_app: Celery) -> None:
    app, ran = rpc_app, []

    @app.task(name="shop.add", shared=False)
    def add(x: int, y: int) -> int:
        ran.append(f"add {x} {y}")
        return x + y

    @app.task(name="shop.fail", shared=False)
    def fail() -> None:
        raise ValueError("boom")

    @app.task(
        name="shop.flaky",
        shared=False,
        bind=True,
        autoretry_for=(ConnectionError,),
        retry_kwargs={"countdown": 1, "max_retries": 3},
    )
    def flaky(self: Task) -> int:
        if self.request.retries == 0:
            raise ConnectionError("the first attempt fails")
        return int(self.request.retries)

    @app.task(name="shop.patient", shared=False, bind=True, max_retries=5)
    def patient(self: Task) -> int:
        if self.request.retries < 2:
            raise self.retry(countdown=1)
        return int(self.request.retries)

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        results = [add.delay(i, i) for i in range(10)]
        assert [r.get(timeout=BOUND_S) for r in results] == [2 * i for i in range(10)]
        with pytest.raises(ValueError, match="boom"):
            fail.delay().get(timeout=BOUND_S)

        sent = time.monotonic()
        later = add.apply_async((20, 22), countdown=2)
        now = add.delay(1, 1)
        retried = flaky.delay()
        retried_twice = patient.delay()
        assert now.get(timeout=BOUND_S) == 2
        assert later.get(timeout=BOUND_S) == 42
        assert time.monotonic() - sent >= 2.0
        # the worker held the countdown task and ran the next one meanwhile
        assert ran[-2:] == ["add 1 1", "add 20 22"]
        assert retried.get(timeout=BOUND_S) == 1  # its second attempt: the first retry
        assert retried_twice.get(timeout=BOUND_S) == 2  # after two countdowns of 1 s


def test_chain_and_group_with_rpc_results(rpc_app: Celery) -> None:
    @rpc_app.task(name="shop.add", shared=False)
    def add(x: int, y: int) -> int:
        return x + y

    with start_worker(rpc_app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        assert chain(add.s(1, 2), add.s(3), add.s(4))().get(timeout=BOUND_S) == 10
        together = group(add.s(i, i) for i in range(5))()
        assert together.get(timeout=BOUND_S) == [0, 2, 4, 6, 8]


def test_chord_with_the_file_system_result_backend(wharf_broker: Any, tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    with _app(wharf_broker.amqp_url, f"file://{results}") as app:

        @app.task(name="shop.square", shared=False)
        def square(x: int) -> int:
            return x * x

        @app.task(name="shop.total", shared=False)
        def total(values: list[int]) -> int:
            return sum(values)

        with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
            header = [square.s(i) for i in range(1, 5)]
            assert chord(header)(total.s()).get(timeout=BOUND_S) == 1 + 4 + 9 + 16


def test_a_worker_killed_mid_task_leaves_the_task_to_the_next(
    wharf_broker: Any, rpc_app: Celery, tmp_path: Path
) -> None:
    result = rpc_app.send_task("shop.slow", ("job-1",))  # declares the "celery" queue too
    answers: list[object] = []
    # the second worker's result reaches the client that sent the task, over rpc:// (read while
    # that worker lives: it sends the result after the task's body wrote "done")
    WorkerProcess.killed_mid_task(
        WORKER, tmp_path, wharf_broker.amqp_url,
        then=lambda: answers.append(result.get(timeout=BOUND_S)),
    )  # fmt: skip
    assert (tmp_path / "started-2").read_text() == "job-1"
    assert not (tmp_path / "started-3").exists()
    assert answers == ["job-1 done"]
