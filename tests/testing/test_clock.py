"""The virtual clock: time, timers and the loop helpers move only when a test moves them."""

import asyncio

import pytest

from wharf.core.clock import Clock
from wharf.testing.clock import VirtualClock


def test_reads_move_only_when_advanced() -> None:
    clock = VirtualClock(start_ms=5_000)
    assert isinstance(clock, Clock)
    assert (clock.now_ms(), clock.monotonic()) == (5_000, 0.0)
    assert (clock.now_ms(), clock.monotonic()) == (5_000, 0.0)
    clock.advance(1_500)
    assert (clock.now_ms(), clock.monotonic()) == (6_500, 1.5)
    clock.advance_s(0.25)
    assert (clock.now_ms(), clock.monotonic()) == (6_750, 1.75)


def test_small_steps_add_up_without_drift() -> None:
    clock = VirtualClock(start_ms=0)
    for _ in range(1_000):
        clock.advance_s(0.001)
    assert clock.now_ms() == 1_000
    assert clock.monotonic() == 1.0


def test_time_does_not_go_backwards() -> None:
    clock = VirtualClock()
    with pytest.raises(ValueError):
        clock.advance(-1)
    with pytest.raises(ValueError):
        clock.advance_s(-0.5)


def test_the_wall_clock_can_step_alone_either_way() -> None:
    clock = VirtualClock(start_ms=10_000)
    fired: list[int] = []
    clock.call_later(1, lambda: fired.append(clock.now_ms()))
    clock.step_wall_clock(-5_000)
    assert (clock.now_ms(), clock.monotonic(), fired) == (5_000, 0.0, [])
    clock.step_wall_clock(2_000)
    clock.advance(1_000)
    assert (clock.now_ms(), clock.monotonic(), fired) == (8_000, 1.0, [8_000])


def test_timers_fire_in_due_order_when_their_time_comes() -> None:
    clock = VirtualClock(start_ms=0)
    fired: list[tuple[str, int]] = []

    def record(name: str) -> None:
        fired.append((name, clock.now_ms()))

    clock.call_later(0.3, lambda: record("c"))
    clock.call_later(0.1, lambda: record("a"))
    clock.call_later(0.2, lambda: record("b"))
    clock.call_later(0.1, lambda: record("a2"))  # due with "a": fires after it
    clock.advance(99)
    assert fired == []
    assert clock.pending() == 4
    clock.advance(150)
    assert fired == [("a", 100), ("a2", 100), ("b", 200)]  # each sees its own due time
    assert clock.now_ms() == 249
    clock.advance(51)
    assert fired[-1] == ("c", 300)
    assert clock.pending() == 0


def test_timers_scheduled_by_callbacks_inside_the_window_fire_too() -> None:
    clock = VirtualClock(start_ms=0)
    ticks: list[int] = []

    def tick() -> None:
        ticks.append(clock.now_ms())
        clock.call_later(0.1, tick)

    clock.call_later(0.1, tick)
    clock.advance(350)
    assert ticks == [100, 200, 300]
    assert clock.next_due_s() == pytest.approx(0.05)


def test_zero_delay_fires_on_the_next_advance_even_by_zero() -> None:
    clock = VirtualClock()
    fired: list[str] = []
    clock.call_later(0, lambda: fired.append("now"))
    clock.call_later(-1, lambda: fired.append("past"))
    assert fired == []
    assert clock.next_due_s() == 0
    clock.advance(0)
    assert fired == ["now", "past"]


def test_cancelled_timers_never_fire() -> None:
    clock = VirtualClock()
    fired: list[str] = []
    kept = clock.call_later(0.1, lambda: fired.append("kept"))
    dropped = clock.call_later(0.1, lambda: fired.append("dropped"))
    dropped.cancel()
    assert clock.pending() == 1

    def cancel_later_one() -> None:
        fired.append("canceller")
        victim.cancel()

    clock.call_later(0.2, cancel_later_one)
    victim = clock.call_later(0.3, lambda: fired.append("victim"))
    clock.advance(1_000)
    assert fired == ["kept", "canceller"]
    kept.cancel()  # already fired: harmless
    assert clock.next_due_s() is None


def test_a_failing_callback_stops_the_advance_at_its_due_time() -> None:
    clock = VirtualClock(start_ms=0)
    fired: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    clock.call_later(0.1, boom)
    clock.call_later(0.2, lambda: fired.append("later"))
    with pytest.raises(RuntimeError, match="boom"):
        clock.advance(500)
    assert clock.now_ms() == 100
    clock.advance(100)
    assert fired == ["later"]


async def test_sleep_wakes_when_the_clock_passes_its_delay() -> None:
    clock = VirtualClock(start_ms=0)
    sleeper = asyncio.create_task(clock.sleep(0.5))
    await asyncio.sleep(0)
    clock.advance(499)
    await asyncio.sleep(0)
    assert not sleeper.done()
    clock.advance(1)
    await sleeper
    assert clock.now_ms() == 500


async def test_a_cancelled_sleep_leaves_no_timer() -> None:
    clock = VirtualClock()
    sleeper = asyncio.create_task(clock.sleep(1))
    await asyncio.sleep(0)
    assert clock.pending() == 1
    sleeper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sleeper
    assert clock.pending() == 0


async def test_run_for_lets_tasks_schedule_their_next_timer_between_timers() -> None:
    clock = VirtualClock(start_ms=0)
    beats: list[int] = []

    async def heartbeat() -> None:
        while True:
            await clock.sleep(0.05)
            beats.append(clock.now_ms())

    task = asyncio.create_task(heartbeat())
    try:
        await clock.run_for(220)
        assert beats == [50, 100, 150, 200]
        assert clock.now_ms() == 220
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_run_until_jumps_from_timer_to_timer() -> None:
    clock = VirtualClock(start_ms=0)

    async def two_naps() -> str:
        await clock.sleep(30)
        await clock.sleep(0.5)
        return "rested"

    assert await clock.run_until(two_naps()) == "rested"
    assert clock.now_ms() == 30_500


async def test_run_until_gives_up_at_its_limit_and_cancels() -> None:
    clock = VirtualClock(start_ms=0)
    cancelled = asyncio.Event()

    async def nap() -> None:
        try:
            await clock.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    with pytest.raises(TimeoutError):
        await clock.run_until(nap(), limit_s=5)
    assert cancelled.is_set()
    assert clock.now_ms() == 0  # the only timer was beyond the limit: no jump


async def test_run_until_refuses_to_wait_on_nothing() -> None:
    clock = VirtualClock()
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    with pytest.raises(RuntimeError, match="no timer"):
        await clock.run_until(never)
    assert never.cancelled()
