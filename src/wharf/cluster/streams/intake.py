"""A node's intake buffer: appends gather into flushes, and flushes commit one at a time in the
order they were cut.

How it works. An append joins the open flush and waits for its answer. The flush is cut as a
group commit cuts: at once (on the event loop's next turn, so that the partitions of one
request share it) while fewer than ``PIPELINE`` flushes are in flight, otherwise when one of
them finishes, and in any case when ``flush_window`` has passed since its first append or as
soon as it holds ``flush_max_bytes``. So a lone producer waits for no timer, and under load
flushes grow to what arrives while the ones ahead of them upload and commit. Each cut flush
gets a sequence number and its own task, which runs ``put`` (the object's upload: those of
successive flushes may overlap) and then, once every flush cut before it has finished,
``commit``. Commits are therefore serial and in cut order, so batches a connection sent in
order commit in order.

A flush that fails answers each of its appends with the error, and so does every flush that
was already cut behind it when it failed (they never commit, so nothing overtakes the failed
one); flushes cut after the failure run normally. The error each append gets is the one that
failed the first flush.

Memory is bounded: appends whose bytes are not answered yet total at most
``intake_max_bytes``; past it a new append waits until answers free room (an append larger
than the whole bound is let in alone). The caller stops reading from the producer's socket
while it waits, which is Kafka's own back-pressure.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from wharf.errors import StorageError
from wharf.storage.validated import ValidatedBatches

__all__ = ["Flush", "Intake", "IntakeLimits", "Pending"]

R = TypeVar("R")
_log = logging.getLogger(__name__)

PIPELINE = 2  # flushes in flight before a new one waits: one uploading, one committing


@dataclass(frozen=True)
class IntakeLimits:
    flush_window: float
    flush_max_bytes: int
    intake_max_bytes: int


@dataclass(slots=True)
class Pending(Generic[R]):
    """One append waiting in a flush."""

    topic_id: uuid.UUID
    partition: int
    batches: ValidatedBatches
    answer: asyncio.Future[R]


@dataclass(slots=True)
class Flush(Generic[R]):
    """A flush: its id (drawn when it is cut), its appends in arrival order, its bytes."""

    sequence: int
    flush_id: uuid.UUID = field(default_factory=uuid.uuid4)
    appends: list[Pending[R]] = field(default_factory=list)
    size: int = 0


class Intake(Generic[R]):
    """See the module docstring. ``put(flush)`` uploads a flush and returns what ``commit``
    needs; ``commit(flush, uploaded)`` returns one answer per append, in order."""

    def __init__(
        self,
        limits: IntakeLimits,
        put: Callable[[Flush[R]], Awaitable[object]],
        commit: Callable[[Flush[R], object], Awaitable[Sequence[R]]],
    ) -> None:
        self._limits = limits
        self._put = put
        self._commit = commit
        self._sequence = itertools.count(1)
        self._open: Flush[R] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._previous: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._cut_sequence = 0
        self._failed_through = 0
        self._failure: BaseException | None = None
        self._held = 0
        self._in_flight = 0  # flushes cut and not yet answered
        self._room = asyncio.Condition()
        self._closed = False

    @property
    def held_bytes(self) -> int:
        """Bytes of appends not answered yet."""
        return self._held

    async def append(self, topic_id: uuid.UUID, partition: int, batches: ValidatedBatches) -> R:
        """Add an append to the open flush and wait for its answer."""
        size = batches.size
        if self._closed:
            raise StorageError("the stream writer is closed")
        async with self._room:
            await self._room.wait_for(
                lambda: self._held == 0 or self._held + size <= self._limits.intake_max_bytes
            )
            self._held += size
        if self._closed:  # closed while waiting for room
            await self._release(size)
            raise StorageError("the stream writer is closed")
        answer: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        flush = self._open
        if flush is None:
            flush = self._open = Flush(0)
            loop = asyncio.get_running_loop()
            if self._in_flight < PIPELINE:
                loop.call_soon(self._cut_open, flush)
            self._timer = loop.call_later(self._limits.flush_window, self._cut)
        flush.appends.append(Pending(topic_id, partition, batches, answer))
        flush.size += size
        if flush.size >= self._limits.flush_max_bytes:
            self._cut()
        # shielded: a caller that stops waiting leaves the append in its flush, whose end
        # releases the bytes
        return await asyncio.shield(answer)

    async def close(self) -> None:
        """Cut what is open and wait until every flush has been answered."""
        self._closed = True
        self._cut()
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self._room:
            self._room.notify_all()

    async def _release(self, size: int) -> None:
        async with self._room:
            self._held -= size
            self._room.notify_all()

    def _cut_open(self, flush: Flush[R]) -> None:
        """Cut ``flush`` if it is still the open one (a size cut may have come first)."""
        if self._open is flush:
            self._cut()

    def _cut(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        flush, self._open = self._open, None
        if flush is None:
            return
        flush.sequence = self._cut_sequence = next(self._sequence)
        self._in_flight += 1
        previous = self._previous
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._previous = done
        task = asyncio.create_task(
            self._run(flush, previous, done), name=f"wharf-flush-{flush.flush_id}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(
        self, flush: Flush[R], previous: asyncio.Future[None] | None, done: asyncio.Future[None]
    ) -> None:
        try:
            try:
                uploaded = await self._put(flush)
            finally:
                if previous is not None:
                    await previous
            if flush.sequence <= self._failed_through and self._failure is not None:
                raise self._failure
            answers = await self._commit(flush, uploaded)
        except Exception as exc:  # every append of the flush is answered with it
            if flush.sequence > self._failed_through:
                self._failed_through = self._cut_sequence
                self._failure = exc
                _log.warning("flush %s failed: %s", flush.flush_id, exc)
            for pending in flush.appends:
                if not pending.answer.done():
                    pending.answer.set_exception(exc)
        else:
            for pending, answer in zip(flush.appends, answers, strict=True):
                if not pending.answer.done():
                    pending.answer.set_result(answer)
        finally:
            done.set_result(None)
            self._in_flight -= 1
            if self._open is not None and self._in_flight < PIPELINE:
                self._cut()  # what gathered while the pipeline was full
            await self._release(flush.size)
