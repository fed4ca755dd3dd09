"""The broker's disk threads: calls run off the loop's thread and their outcomes come back to
it, as many side by side as there are threads, queued jobs finish before a shutdown and later
ones are refused, and it serves as a standard executor."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import pytest

from wharf.core.disk_pool import DiskPool
from wharf.core.durability import run_off_loop, start_off_loop


@pytest.fixture
def pool() -> Iterator[DiskPool]:
    disk = DiskPool(3, "disk-test")
    yield disk
    disk.shutdown(wait=True)


async def test_a_call_runs_on_a_pool_thread_and_its_result_or_error_comes_back(
    pool: DiskPool,
) -> None:
    assert await pool.run(lambda: threading.current_thread().name) in {
        "disk-test_0", "disk-test_1", "disk-test_2"
    }  # fmt: skip
    with pytest.raises(ZeroDivisionError):
        await pool.run(lambda: 1 // 0)
    assert await run_off_loop(pool, lambda: 42) == 42


async def test_start_hands_the_outcome_to_a_callback_on_the_loops_thread(
    pool: DiskPool,
) -> None:
    loop = asyncio.get_running_loop()
    outcomes: asyncio.Queue[tuple[object, BaseException | None, str]] = asyncio.Queue()

    def done(result: object, error: BaseException | None) -> None:
        outcomes.put_nowait((result, error, threading.current_thread().name))

    loop_thread = threading.current_thread().name
    pool.start(loop, lambda: "written", done)
    assert await outcomes.get() == ("written", None, loop_thread)
    start_off_loop(pool, lambda: 1 // 0, done)
    result, error, thread = await outcomes.get()
    assert result is None and isinstance(error, ZeroDivisionError) and thread == loop_thread


async def test_the_same_callback_comes_from_any_executor() -> None:
    standard = ThreadPoolExecutor(1)
    outcomes: asyncio.Queue[tuple[object, BaseException | None]] = asyncio.Queue()
    try:
        start_off_loop(standard, lambda: 7, lambda r, e: outcomes.put_nowait((r, e)))
        assert await outcomes.get() == (7, None)
        start_off_loop(standard, lambda: [][0], lambda r, e: outcomes.put_nowait((r, e)))
        result, error = await outcomes.get()
        assert result is None and isinstance(error, IndexError)
    finally:
        standard.shutdown(wait=True)


async def test_calls_run_side_by_side_up_to_the_number_of_threads(pool: DiskPool) -> None:
    both_in = threading.Barrier(3, timeout=10)  # three calls must be inside at once
    names = await asyncio.gather(*(pool.run(partial(_meet, both_in)) for _ in range(3)))
    assert sorted(names) == ["disk-test_0", "disk-test_1", "disk-test_2"]


def _meet(barrier: threading.Barrier) -> str:
    barrier.wait()
    return threading.current_thread().name


async def test_an_awaiter_cancelled_meanwhile_does_not_stop_the_call(pool: DiskPool) -> None:
    gate, ran = threading.Event(), threading.Event()

    def call() -> None:
        gate.wait(10)
        ran.set()

    waiter = asyncio.create_task(pool.run(call))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    gate.set()
    assert await pool.run(lambda: ran.wait(10))  # the call went on to its end


def test_as_an_executor_it_runs_submitted_calls_and_skips_cancelled_ones() -> None:
    pool = DiskPool(1, "disk-test")
    try:
        gate = threading.Event()
        held = pool.submit(partial(gate.wait, 10))
        skipped = pool.submit(lambda: "never")
        assert skipped.cancel()  # still queued behind the held call
        later = pool.submit(lambda: "ran")
        gate.set()
        assert held.result(10) is True and later.result(10) == "ran"
        assert skipped.cancelled()
    finally:
        pool.shutdown(wait=True)


def test_shutdown_finishes_the_queued_calls_then_refuses_new_ones() -> None:
    pool = DiskPool(2, "disk-test")
    finished: list[int] = []
    futures = [pool.submit(partial(_slowly, finished, n)) for n in range(6)]
    pool.shutdown(wait=True)
    assert sorted(finished) == list(range(6)) and all(f.done() for f in futures)
    assert not any(thread.is_alive() for thread in threading.enumerate()
                   if thread.name.startswith("disk-test_"))  # fmt: skip
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)
    pool.shutdown(wait=True)  # a second shutdown is harmless


def _slowly(finished: list[int], n: int) -> None:
    time.sleep(0.01)
    finished.append(n)
