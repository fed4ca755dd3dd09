"""TimerChain: one run of its job at a time on a clock's timers, re-armed after each run,
woken sooner by a nearer deadline, and closed only once a running job has ended."""

import asyncio

from wharf.core.timer_chain import TimerChain
from wharf.testing.clock import VirtualClock


async def test_a_timer_chain_never_overlaps_its_job_and_close_waits_for_a_run() -> None:
    clock = VirtualClock()
    release = asyncio.Event()
    runs: list[float] = []

    async def job() -> None:
        runs.append(clock.monotonic())
        await release.wait()

    chain = TimerChain(clock, job, lambda: 1.0, "test job")
    chain.start()
    await clock.run_for(5_000)
    assert runs == [1.0]  # still running: no second run, no timer armed meanwhile
    assert clock.pending() == 0
    release.set()
    await clock.run_for(0)
    assert clock.next_due_s() == 1.0  # re-armed when the run ended
    release.clear()
    await clock.run_for(1_000)
    assert runs == [1.0, 6.0]
    closing = asyncio.ensure_future(chain.close())
    await clock.run_for(0)
    assert not closing.done()  # waits for the running job
    release.set()
    await closing
    assert clock.pending() == 0
    await clock.run_for(10_000)
    assert runs == [1.0, 6.0]


async def test_a_timer_chain_wakes_sooner_only_for_a_nearer_deadline() -> None:
    clock = VirtualClock()
    delay = [5.0]
    runs: list[float] = []

    async def job() -> None:
        runs.append(clock.monotonic())

    chain = TimerChain(clock, job, lambda: delay[0], "test job")
    chain.wake()  # before start: nothing armed
    assert clock.pending() == 0
    chain.start()
    delay[0] = 8.0
    chain.wake()  # later than the armed timer: kept
    delay[0] = 2.0
    chain.wake()  # nearer: re-armed
    assert clock.pending() == 1
    await clock.run_for(2_000)
    assert runs == [2.0]
    await chain.close()


async def test_a_timer_chain_with_nothing_to_do_sleeps_until_woken() -> None:
    clock = VirtualClock()
    work = [False]
    runs: list[float] = []

    async def job() -> None:
        runs.append(clock.monotonic())
        work[0] = False  # done: nothing left

    chain = TimerChain(clock, job, lambda: 2.0 if work[0] else None, "test job")
    chain.start()
    assert clock.pending() == 0  # nothing to do: no timer
    await clock.run_for(10_000)
    assert runs == []
    work[0] = True
    chain.wake()
    assert clock.pending() == 1
    await clock.run_for(5_000)
    assert runs == [12.0]  # one run, then asleep again
    assert clock.pending() == 0
    await chain.close()
