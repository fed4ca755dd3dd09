"""A real Celery worker (solo pool, in a thread) runs tasks through Wharf, results over rpc://."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from amqp_inprocess import InProcessBroker
from celery import Celery
from celery.contrib.testing.worker import start_worker

pytestmark = [pytest.mark.interop, pytest.mark.slow]


@pytest.fixture(autouse=True)
def _restore_root_log_level() -> Iterator[None]:
    """Celery's in-process worker sets the root logger to its own level; give it back."""
    root = logging.getLogger()
    level = root.level
    yield
    root.setLevel(level)


def test_celery_task_end_to_end_with_rpc_backend(amqp_broker: InProcessBroker) -> None:
    app = Celery(
        "wharf_interop",
        broker=f"pyamqp://guest:guest@127.0.0.1:{amqp_broker.port}//",
        backend="rpc://",
    )
    app.conf.update(
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_acks_late=True,
        worker_prefetch_multiplier=4,
        # Short heartbeats make the worker's event loop wake often, so it stops promptly
        # (and exercise heartbeats both ways with py-amqp).
        broker_heartbeat=2,
    )

    @app.task(name="wharf_interop.add")
    def add(x: int, y: int) -> int:
        return x + y

    @app.task(name="wharf_interop.fail")
    def fail() -> None:
        raise ValueError("boom")

    with start_worker(app, pool="solo", perform_ping_check=False, shutdown_timeout=10):
        results = [add.delay(i, i) for i in range(10)]
        assert [r.get(timeout=30) for r in results] == [2 * i for i in range(10)]
        eta = add.apply_async((20, 22), countdown=1)
        assert eta.get(timeout=30) == 42
        with pytest.raises(ValueError, match="boom"):
            fail.delay().get(timeout=30)
