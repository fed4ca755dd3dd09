"""Group commit: one fdatasync covers every append that arrived while the previous one ran.

How it works (``FsyncPolicy.ALWAYS``): an appender calls :meth:`GroupCommitter.wait_durable`
with the end offset of what it wrote. If that offset is already durable it returns at once;
otherwise it parks a future and, unless a flush is already running, starts the flush loop. The
loop runs ``log.flush()`` on a worker thread (the log allows appends on the owner thread
meanwhile), wakes every waiter whose end offset the flush covered, and runs again while waiters
remain, so appends that arrive during one fsync share the next. A failed flush (``StorageError``)
fails the waiters it was meant to cover with that error; the next waiter starts a fresh attempt
(which a disk log fenced by a failed fsync fails at once, until the broker restarts).

``INTERVAL`` flushes every ``fsync_interval_ms`` on the committer's clock (a
:class:`~wharf.core.timer_chain.TimerChain`, so a virtual clock drives it in tests) while
something written is not flushed, and never makes callers wait: a writer calls
:meth:`GroupCommitter.written` after each write, which arms the timer when it sleeps, so an idle
log costs no timer. ``NEVER`` leaves the data to the operating system. Under every policy
``on_durable`` is called on the event-loop thread each time the durable offset advances.

Everything else that waits on the disk (a producer-state snapshot at a segment roll, a
definitions save, closing or deleting a log, opening one) goes through the same threads:
:func:`fsync_executor` makes the broker's one pool (a :class:`~wharf.core.disk_pool.DiskPool`,
whose results come back to the loop in one step), :func:`run_off_loop` runs a blocking call on
it and awaits the result, and :meth:`GroupCommitter.run` does the same with its log's pool. So no
fsync runs on the event-loop thread, and a slow disk stalls only those who wait for it. A change
that opens logs there and then registers them (declaring a durable queue, creating a topic) runs
through :func:`run_to_end`, so a caller cancelled meanwhile (its connection lost) does not
abandon logs opened on the pool but never registered, hence never closed.

Every completed flush is timed (``time.perf_counter`` around ``log.flush`` on the worker
thread) and counted on the event-loop thread into the histogram of the log's kind
(``partition``, ``queue``, ``offsets``...) in the fsync histograms the committer is given (the
broker's ``broker.stats.fsync``, shared by every committer of that kind of that broker, so they
survive logs being closed or replaced; read by the HTTP layer's ``/metrics``). A committer given
none keeps a histogram of its own.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor
from functools import partial
from typing import Any, Protocol, TypeVar

from wharf.core.clock import Clock
from wharf.core.config import FsyncPolicy
from wharf.core.disk_pool import DiskPool, Done
from wharf.core.stats import FSYNC_BUCKETS_S, Histogram, HistogramFamily
from wharf.core.timer_chain import TimerChain
from wharf.errors import StorageError

__all__ = [
    "FSYNC_THREADS",
    "Flushable",
    "GroupCommitter",
    "fsync_executor",
    "run_off_loop",
    "run_to_end",
    "start_off_loop",
    "submit_off_loop",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")

# Threads of the broker's fsync pool: fsyncs of different logs overlap, one log's never do.
FSYNC_THREADS = 4


def fsync_executor(threads: int = FSYNC_THREADS) -> DiskPool:
    """The broker's one pool of threads for blocking disk work (see the module docstring)."""
    return DiskPool(threads, "wharf-fsync")


async def run_off_loop(executor: Executor | None, call: Callable[[], _T]) -> _T:
    """Run ``call`` on ``executor`` (the loop's default pool when None) and await its result
    (by the pool's short way back when it is a :class:`DiskPool`)."""
    if type(executor) is DiskPool:
        return await executor.run(call)
    return await asyncio.get_running_loop().run_in_executor(executor, call)


def start_off_loop(executor: Executor | None, call: Callable[[], _T], done: Done[_T]) -> None:
    """Run ``call`` on ``executor`` (the loop's default pool when None), then, on the loop's
    thread, ``done(result, None)`` or ``done(None, exception)``: for a caller that goes on by
    itself, without a task awaiting the call."""
    loop = asyncio.get_running_loop()
    if type(executor) is DiskPool:
        executor.start(loop, call, done)
        return
    loop.run_in_executor(executor, call).add_done_callback(partial(_report, done))


def submit_off_loop(
    executor: Executor | None, call: Callable[[], _T]
) -> concurrent.futures.Future[_T]:
    """Run ``call`` on ``executor`` (the loop's default pool when None); its future can be
    awaited (:func:`asyncio.wrap_future`) or, on the loop's thread, waited for."""
    job: concurrent.futures.Future[_T] = concurrent.futures.Future()

    def run() -> None:
        if not job.set_running_or_notify_cancel():
            return
        try:
            job.set_result(call())
        except BaseException as exc:
            job.set_exception(exc)

    asyncio.get_running_loop().run_in_executor(executor, run)
    return job


def _report(done: Done[_T], future: asyncio.Future[_T]) -> None:
    if future.cancelled():
        done(None, asyncio.CancelledError())
    elif (error := future.exception()) is not None:
        done(None, error)
    else:
        done(future.result(), None)


# Changes whose callers were cancelled, kept referenced until they finish.
_running_to_end: set[asyncio.Task[Any]] = set()


async def run_to_end(change: Coroutine[Any, Any, _T]) -> _T:
    """Await ``change`` as a task that cancelling the caller does not stop (the caller still
    sees the cancellation); its outcome is logged if it fails after that."""
    task = asyncio.get_running_loop().create_task(change)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        if not task.done():
            _running_to_end.add(task)
            task.add_done_callback(_finished_alone)
        raise


def _finished_alone(task: asyncio.Task[Any]) -> None:
    _running_to_end.discard(task)
    if not task.cancelled() and task.exception() is not None:
        log.error("a change whose caller went away failed: %s", task.exception())


class Flushable(Protocol):
    """The part of a storage log group commit needs."""

    @property
    def next_offset(self) -> int: ...

    def flush(self) -> int:
        """Force written data to disk; return the durable end offset. Thread-safe."""
        ...


class GroupCommitter:
    """Batches fsyncs of one log; see the module docstring."""

    def __init__(
        self,
        log: Flushable,
        policy: FsyncPolicy,
        *,
        interval_ms: int = 1000,
        durable_offset: int = 0,
        on_durable: Callable[[int], None] | None = None,
        executor: Executor | None = None,
        kind: str = "other",
        fsync_latency: HistogramFamily[str] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._log = log
        self.kind = kind
        # shared with every committer of this kind given the same family; see the module docstring
        self.fsync_latency = (
            Histogram(FSYNC_BUCKETS_S) if fsync_latency is None else fsync_latency[kind]
        )
        self.policy = policy
        self.interval_ms = max(interval_ms, 1)
        self._interval_s = self.interval_ms / 1000.0
        self._durable = durable_offset
        self._on_durable = on_durable
        self._executor = executor
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._ticker = TimerChain(
            Clock() if clock is None else clock,
            self._tick,
            self._next_tick,
            "periodic fsync",
        )
        self._failing = False  # the periodic fsync failed last time (logged once)
        self._closed = False
        self.fsyncs = 0  # number of completed flushes, for metrics and benchmarks

    @property
    def durable_offset(self) -> int:
        return self._durable

    @property
    def idle(self) -> bool:
        """Whether no flush is waited for or running."""
        return not self._waiters and self._flusher is None

    async def run(self, call: Callable[[], _T]) -> _T:
        """Run blocking disk work for this log (``call``) on the fsync pool and await it; open
        also after :meth:`close` (a log is closed and deleted through it)."""
        return await run_off_loop(self._executor, call)

    def start(self) -> None:
        """Start the periodic flush (``INTERVAL`` only); needs a running loop. It ticks only
        while something written is not flushed: a writer calls :meth:`written` after each
        write, so an idle log costs no timer."""
        if self.policy is FsyncPolicy.INTERVAL and not self._closed:
            self._ticker.start()

    def written(self) -> None:
        """Something was written to the log: under ``INTERVAL``, flush it within the
        interval (arms the periodic flush if it sleeps)."""
        if self.policy is FsyncPolicy.INTERVAL:
            self._ticker.wake()

    def _next_tick(self) -> float | None:
        """The periodic flush's next wait: the interval while something is unflushed."""
        return self._interval_s if self._log.next_offset > self._durable else None

    async def wait_durable(self, end_offset: int) -> None:
        """Return once offsets below ``end_offset`` are on disk (``ALWAYS``), else at once."""
        if self.policy is not FsyncPolicy.ALWAYS or end_offset <= self._durable:
            return
        if self._closed:
            raise StorageError("the log is closed; the append was not made durable")
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((end_offset, future))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())
        await future

    def request_flush(self, end_offset: int) -> None:
        """Make offsets below ``end_offset`` durable soon without waiting (``ALWAYS`` only)."""
        if self.policy is not FsyncPolicy.ALWAYS or end_offset <= self._durable or self._closed:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.add_done_callback(_consume_outcome)
        self._waiters.append((end_offset, future))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def flush_now(self) -> int:
        """Flush whatever is written (regardless of policy); return the durable offset."""
        while self._flusher is not None:
            await asyncio.shield(self._flusher)
        await self._flush_once()
        return self._durable

    async def close(self) -> None:
        """Stop the periodic flush and wait for a running one; later waits fail."""
        self._closed = True
        await self._ticker.close()
        while self._flusher is not None:
            await asyncio.shield(self._flusher)

    async def _flush_loop(self) -> None:
        try:
            while self._waiters:
                covered = list(self._waiters)
                try:
                    await self._flush_once()
                except Exception as exc:  # every failure must reach the waiters, or they hang
                    self._fail(covered, exc)
                    continue
                self._release()
        finally:
            self._flusher = None

    async def _flush_once(self) -> None:
        durable, seconds = await run_off_loop(self._executor, self._timed_flush)
        self.fsyncs += 1
        self.fsync_latency.observe(seconds)
        if durable > self._durable:
            self._durable = durable
            if self._on_durable is not None:
                self._on_durable(durable)

    def _timed_flush(self) -> tuple[int, float]:
        started = time.perf_counter()
        durable = self._log.flush()
        return durable, time.perf_counter() - started

    def _release(self) -> None:
        pending: list[tuple[int, asyncio.Future[None]]] = []
        for end_offset, future in self._waiters:
            if future.done():
                continue
            if end_offset <= self._durable:
                future.set_result(None)
            else:
                pending.append((end_offset, future))
        self._waiters = pending

    def _fail(self, covered: list[tuple[int, asyncio.Future[None]]], exc: Exception) -> None:
        failed = {id(future) for _, future in covered}
        for _, future in covered:
            if not future.done():
                future.set_exception(exc)
        self._waiters = [
            (end, future)
            for end, future in self._waiters
            if id(future) not in failed and not future.done()
        ]

    async def _tick(self) -> None:
        if self._log.next_offset <= self._durable:
            return
        try:
            await self._flush_once()
        except StorageError as exc:
            # Logged once while it keeps failing (a log fenced by a failed fsync fails
            # every time until the broker restarts).
            if not self._failing:
                log.error("periodic fsync failed: %s; retrying every %.3f s",
                          exc, self._interval_s)
            self._failing = True
        else:
            self._failing = False


def _consume_outcome(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.error("background fsync failed: %s", future.exception())
