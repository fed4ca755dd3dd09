"""Long-poll watermarks against a real PostgreSQL: notifications wake parked fetches, timeouts
answer False, ``*`` and the loss of the LISTEN connection wake everyone (and it comes back), and
the periodic refresh finds an advance that was never notified."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable

import pytest

from helpers.postgres_server import PostgresServer
from wharf.cluster.catalog import NodeLease, create_topic
from wharf.cluster.database import Database
from wharf.cluster.streams.watermarks import Watermarks, parse_payload

BOUND_S = 20.0
QUIET = 60.0  # a refresh interval that never fires within a test


async def advance(
    db: Database, topic: uuid.UUID, partition: int, to: int, *, notify: bool = True
) -> None:
    """Move the partition's next offset as a flush's commit does, notifying or not."""
    async with db.transaction() as tx:
        await tx.execute(
            "UPDATE stream_partitions SET next_offset = %s WHERE topic_id = %s AND partition = %s",
            (to, topic, partition),
        )
        if notify:
            await tx.execute(
                "SELECT pg_notify('wharf_streams', %s)", (f"{topic.hex}:{partition}:{to}",)
            )


async def notify(db: Database, payload: str) -> None:
    async with db.transaction() as tx:
        await tx.execute("SELECT pg_notify('wharf_streams', %s)", (payload,))


async def eventually(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + BOUND_S
    while not condition():
        assert time.monotonic() < deadline, "the condition did not come true"
        await asyncio.sleep(0.02)


async def parked(wait: asyncio.Task[bool]) -> None:
    """Let ``wait`` run up to its park (it parks before its first suspension)."""
    await asyncio.sleep(0)
    assert not wait.done()


@pytest.fixture
async def topic(db: Database, node_lease: NodeLease) -> uuid.UUID:
    return (await create_topic(db, node_lease, "events", 3)).topic_id


@pytest.fixture
async def watermarks(db: Database, node_lease: NodeLease) -> AsyncIterator[Watermarks]:
    marks = Watermarks(db, refresh_interval=QUIET)
    await marks.start()
    try:
        yield marks
    finally:
        await marks.close()


def test_payloads_name_partitions_or_ask_for_everything() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    assert parse_payload(f"{a.hex}:0:5 {b.hex}:3:17") == {(a, 0): 5, (b, 3): 17}
    assert parse_payload(f"{a.hex}:0:5 {a.hex}:0:4") == {(a, 0): 5}
    assert parse_payload("*") is None
    assert parse_payload(f"{a.hex}:0") is None  # unreadable: refresh everything
    assert parse_payload("nonsense:0:1") is None


async def test_a_notification_past_the_offset_wakes_a_parked_fetch(
    db: Database, topic: uuid.UUID, watermarks: Watermarks
) -> None:
    wait = asyncio.create_task(watermarks.wait_for_any([(topic, 0, 3)], BOUND_S))
    await parked(wait)
    await advance(db, topic, 0, 3)  # at the offset, not past it
    await eventually(lambda: watermarks.high_watermark(topic, 0) == 3)
    assert not wait.done()
    await advance(db, topic, 1, 9)  # another partition
    await eventually(lambda: watermarks.high_watermark(topic, 1) == 9)
    assert not wait.done()
    await advance(db, topic, 0, 4)
    assert await wait is True
    assert watermarks.high_watermark(topic, 0) == 4


async def test_a_known_watermark_past_the_offset_answers_at_once(
    db: Database, topic: uuid.UUID, watermarks: Watermarks
) -> None:
    await advance(db, topic, 2, 5)
    await eventually(lambda: watermarks.high_watermark(topic, 2) == 5)
    # with a zero timeout only the known watermark can answer True
    assert await watermarks.wait_for_any([(topic, 1, 0), (topic, 2, 4)], 0) is True
    assert await watermarks.wait_for_any([(topic, 2, 5)], 0) is False


async def test_the_timeout_answers_false(topic: uuid.UUID, watermarks: Watermarks) -> None:
    assert await watermarks.wait_for_any([(topic, 0, 0)], 0.2) is False


async def test_refresh_all_wakes_every_parked_fetch(
    db: Database, topic: uuid.UUID, watermarks: Watermarks
) -> None:
    await advance(db, topic, 2, 5)
    await eventually(lambda: watermarks.high_watermark(topic, 2) == 5)
    waits = [
        asyncio.create_task(watermarks.wait_for_any([(topic, p, 7)], BOUND_S)) for p in (0, 1)
    ]
    await asyncio.sleep(0)
    await notify(db, "*")
    assert await asyncio.gather(*waits) == [True, True]
    assert watermarks.high_watermark(topic, 2) is None  # no longer known


async def test_losing_the_listen_connection_wakes_everyone_and_it_comes_back(
    db: Database, topic: uuid.UUID, watermarks: Watermarks
) -> None:
    await advance(db, topic, 0, 2)
    await eventually(lambda: watermarks.high_watermark(topic, 0) == 2)
    wait = asyncio.create_task(watermarks.wait_for_any([(topic, 0, 2)], BOUND_S))
    await parked(wait)

    async with db.transaction() as tx:
        ended = await tx.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND query = 'LISTEN wharf_streams'"
        )
    assert ended == 1
    assert await wait is True
    assert watermarks.high_watermark(topic, 0) is None
    await eventually(lambda: watermarks.connected)

    again = asyncio.create_task(watermarks.wait_for_any([(topic, 0, 2)], BOUND_S))
    await parked(again)
    await advance(db, topic, 0, 3)
    assert await again is True
    assert watermarks.high_watermark(topic, 0) == 3


async def test_a_database_restart_wakes_fetches_on_losing_and_on_regaining_the_connection(
    db: Database, topic: uuid.UUID, watermarks: Watermarks, postgres: PostgresServer
) -> None:
    before = asyncio.create_task(watermarks.wait_for_any([(topic, 0, 0)], BOUND_S))
    await parked(before)
    await asyncio.to_thread(postgres.stop)
    try:
        assert await before is True
        await eventually(lambda: not watermarks.connected)
        # parked while nothing can be heard: the connection's return wakes it to read again
        during = asyncio.create_task(watermarks.wait_for_any([(topic, 0, 0)], BOUND_S))
        await parked(during)
    finally:
        await asyncio.to_thread(postgres.start)
    assert await during is True
    assert watermarks.connected

    after = asyncio.create_task(watermarks.wait_for_any([(topic, 1, 0)], BOUND_S))
    await parked(after)
    await advance(db, topic, 1, 1)
    assert await after is True


async def test_the_refresh_finds_an_advance_never_notified(
    db: Database, topic: uuid.UUID, node_lease: NodeLease
) -> None:
    marks = Watermarks(db, refresh_interval=0.1)
    await marks.start()
    try:
        wait = asyncio.create_task(marks.wait_for_any([(topic, 1, 0), (topic, 2, 0)], BOUND_S))
        await parked(wait)
        await advance(db, topic, 2, 6, notify=False)
        assert await wait is True
        assert marks.high_watermark(topic, 2) == 6
        assert marks.high_watermark(topic, 1) == 0
    finally:
        await marks.close()


async def test_closing_wakes_parked_fetches(topic: uuid.UUID, db: Database) -> None:
    marks = Watermarks(db, refresh_interval=QUIET)
    await marks.start()
    wait = asyncio.create_task(marks.wait_for_any([(topic, 0, 0)], BOUND_S))
    await parked(wait)
    await marks.close()
    assert await wait is True
    assert await marks.wait_for_any([(topic, 0, 0)], BOUND_S) is True
