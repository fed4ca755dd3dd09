"""The intake buffer on its own, with upload and commit functions of the test's making: flushes
are cut by window and by size, commit one at a time in cut order, a failure fails the flushes
queued behind it (and not the later ones), and memory past intake_max_bytes makes appends wait."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import pytest

from wharf.cluster.streams.intake import Flush, Intake, IntakeLimits
from wharf.errors import StorageError
from wharf.storage.record_batch import RecordInput, build_batch
from wharf.storage.validated import ValidatedBatches, validate_batches

TOPIC = uuid.uuid4()
BOUND_S = 10.0


def batches(value: bytes = b"v") -> ValidatedBatches:
    return validate_batches(build_batch([RecordInput(None, value)], now_ms=1), 1 << 20)


class Recorder:
    """Uploads after a per-flush delay; commits answer each append with (flush sequence,
    index), or fail for the flushes named in ``fail``."""

    def __init__(self) -> None:
        self.put_delays: dict[int, float] = {}
        self.fail: set[int] = set()
        self.committed: list[int] = []
        self.flushes: list[Flush[tuple[int, int]]] = []

    async def put(self, flush: Flush[tuple[int, int]]) -> object:
        self.flushes.append(flush)
        await asyncio.sleep(self.put_delays.get(flush.sequence, 0.0))
        return flush.sequence

    async def commit(
        self, flush: Flush[tuple[int, int]], uploaded: object
    ) -> Sequence[tuple[int, int]]:
        assert uploaded == flush.sequence
        if flush.sequence in self.fail:
            raise StorageError(f"flush {flush.sequence} failed")
        self.committed.append(flush.sequence)
        return [(flush.sequence, i) for i in range(len(flush.appends))]


def intake(recorder: Recorder, window: float = 0.01, max_bytes: int = 1 << 20,
           intake_max: int = 1 << 30) -> Intake[tuple[int, int]]:
    return Intake(IntakeLimits(window, max_bytes, intake_max), recorder.put, recorder.commit)


async def test_appends_in_one_window_share_a_flush() -> None:
    recorder = Recorder()
    buffer = intake(recorder, window=0.05)
    async with asyncio.timeout(BOUND_S):
        answers = await asyncio.gather(*(buffer.append(TOPIC, i, batches()) for i in range(3)))
    assert answers == [(1, 0), (1, 1), (1, 2)]
    assert [p.partition for p in recorder.flushes[0].appends] == [0, 1, 2]
    assert buffer.held_bytes == 0


async def test_a_flush_reaching_its_byte_limit_is_cut_at_once() -> None:
    recorder = Recorder()
    one = batches()
    buffer = intake(recorder, window=60.0, max_bytes=2 * one.size)
    async with asyncio.timeout(BOUND_S):
        answers = await asyncio.gather(*(buffer.append(TOPIC, 0, one) for _ in range(4)))
    assert answers == [(1, 0), (1, 1), (2, 0), (2, 1)]


async def test_commits_follow_the_cut_order_whatever_the_uploads_do() -> None:
    recorder = Recorder()
    recorder.put_delays = {1: 0.2}  # the first flush's upload is the slow one
    one = batches()
    buffer = intake(recorder, window=60.0, max_bytes=one.size)
    async with asyncio.timeout(BOUND_S):
        answers = await asyncio.gather(*(buffer.append(TOPIC, 0, one) for _ in range(3)))
    assert answers == [(1, 0), (2, 0), (3, 0)]
    assert recorder.committed == [1, 2, 3]


async def test_a_failed_flush_fails_those_queued_behind_it_and_not_later_ones() -> None:
    recorder = Recorder()
    recorder.put_delays = {1: 0.2}
    recorder.fail = {1}
    one = batches()
    buffer = intake(recorder, window=60.0, max_bytes=one.size)
    async with asyncio.timeout(BOUND_S):
        results = await asyncio.gather(
            *(buffer.append(TOPIC, 0, one) for _ in range(3)), return_exceptions=True
        )
        assert all(isinstance(r, StorageError) for r in results)
        assert all(str(r) == "flush 1 failed" for r in results)
        assert recorder.committed == []
        assert await buffer.append(TOPIC, 0, one) == (4, 0)
    assert recorder.committed == [4]
    assert buffer.held_bytes == 0


async def test_appends_wait_while_the_intake_is_full() -> None:
    recorder = Recorder()
    recorder.put_delays = {1: 0.3}
    one = batches()
    buffer = intake(recorder, window=0.01, intake_max=one.size)
    async with asyncio.timeout(BOUND_S):
        first = asyncio.create_task(buffer.append(TOPIC, 0, one))
        await asyncio.sleep(0.05)
        second = asyncio.create_task(buffer.append(TOPIC, 0, one))
        await asyncio.sleep(0.1)
        assert not second.done()
        assert buffer.held_bytes == one.size  # the second is not in the intake yet
        assert await first == (1, 0)
        assert await second == (2, 0)
    assert [len(f.appends) for f in recorder.flushes] == [1, 1]


async def test_close_commits_what_is_open_then_refuses_appends() -> None:
    recorder = Recorder()
    buffer = intake(recorder, window=60.0)
    async with asyncio.timeout(BOUND_S):
        pending = asyncio.create_task(buffer.append(TOPIC, 0, batches()))
        await asyncio.sleep(0)
        await buffer.close()
        assert await pending == (1, 0)
        with pytest.raises(StorageError, match="closed"):
            await buffer.append(TOPIC, 0, batches())


async def test_an_idle_intake_cuts_at_once_without_waiting_for_the_window() -> None:
    # Group commit: with nothing in flight there is nothing to wait for (low latency at low
    # load); the window only bounds how long a flush stays open while others are in flight.
    recorder = Recorder()
    buffer = intake(recorder, window=60.0)
    async with asyncio.timeout(BOUND_S):
        assert await buffer.append(TOPIC, 0, batches()) == (1, 0)


async def test_appends_arriving_while_the_pipeline_is_full_join_one_flush() -> None:
    # Two flushes in flight (one uploading, one waiting to commit) fill the pipeline: what
    # arrives meanwhile gathers in one flush, cut as soon as one of them finishes.
    recorder = Recorder()
    recorder.put_delays = {1: 0.2, 2: 0.2}
    buffer = intake(recorder, window=60.0)
    async with asyncio.timeout(BOUND_S):
        first = asyncio.create_task(buffer.append(TOPIC, 0, batches()))
        await asyncio.sleep(0.01)
        second = asyncio.create_task(buffer.append(TOPIC, 0, batches()))
        await asyncio.sleep(0.01)
        later = [asyncio.create_task(buffer.append(TOPIC, 0, batches())) for _ in range(3)]
        await asyncio.sleep(0.01)
        later.append(asyncio.create_task(buffer.append(TOPIC, 0, batches())))
        assert await first == (1, 0)
        assert await second == (2, 0)
        assert [await t for t in later] == [(3, 0), (3, 1), (3, 2), (3, 3)]
    assert recorder.committed == [1, 2, 3]
