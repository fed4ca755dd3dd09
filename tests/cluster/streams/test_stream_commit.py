"""One flush's fenced transaction against a real PostgreSQL: offsets, idempotent producers'
statuses, unknown partitions, the fence, re-running a flush id that already committed (the
outcome-unknown path), and the notification a LISTEN connection receives."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest

from wharf.cluster.catalog import NodeLease, create_topic, delete_topic
from wharf.cluster.database import Database
from wharf.cluster.nodes import LeaseLostError, Membership, MembershipSettings
from wharf.cluster.streams.commit import (
    NOTIFY_CHANNEL,
    Appended,
    AppendStatus,
    FlushPlan,
    PlannedAppend,
    PlannedBatch,
    commit_flush,
    notify_payload,
)
from wharf.storage.record_batch import RecordInput, build_batch
from wharf.storage.validated import validate_batches

BOUND_S = 30.0
A = AppendStatus


def append(
    topic_id: uuid.UUID, partition: int, records: int = 1, *, pid: int = -1, epoch: int = -1,
    seq: int = -1, extra: int = 0,
) -> PlannedAppend:
    """An append of one batch (plus ``extra`` batches following it in sequence)."""
    data = b""
    for i in range(1 + extra):
        data += build_batch(
            [RecordInput(None, b"v%d" % r) for r in range(records)],
            producer_id=pid, producer_epoch=epoch,
            base_sequence=-1 if seq < 0 else seq + i * records, now_ms=1_000,
        )
    batches = validate_batches(data, 1 << 20)
    return PlannedAppend(
        topic_id, partition,
        [PlannedBatch(h, p) for h, p in zip(batches.headers, batches.positions, strict=True)],
        batches.size,
    )


def plan(*appends: PlannedAppend) -> FlushPlan:
    """A flush of ``appends`` laid out back to back in its object."""
    flush_id = uuid.uuid4()
    placed, start = [], 0
    for a in appends:
        batches = [PlannedBatch(b.header, start + b.byte_start) for b in a.batches]
        placed.append(PlannedAppend(a.topic_id, a.partition, batches, a.size))
        start += a.size
    return FlushPlan(flush_id, f"intake/node-a/{flush_id}", start, placed)


async def rows(db: Database, sql: str) -> int:
    async with db.transaction() as tx:
        return int(await tx.fetchval(sql))  # type: ignore[arg-type]


async def next_offsets(db: Database, topic_id: uuid.UUID) -> list[int]:
    async with db.transaction() as tx:
        found = await tx.fetchall(
            "SELECT next_offset FROM stream_partitions WHERE topic_id = %s ORDER BY partition",
            (topic_id,),
        )
    return [int(r[0]) for r in found]


async def commit(db: Database, lease: NodeLease, *appends: PlannedAppend) -> list[Appended]:
    return await commit_flush(db, lease, plan(*appends))


async def test_offsets_are_assigned_densely_in_arrival_order(
    db: Database, node_lease: NodeLease
) -> None:
    topic = (await create_topic(db, node_lease, "orders", 2)).topic_id
    first = await commit(db, node_lease, append(topic, 0, 3), append(topic, 1), append(topic, 0))
    assert first == [Appended(A.APPENDED, 0, 2, 0), Appended(A.APPENDED, 0, 0, 0),
                     Appended(A.APPENDED, 3, 3, 0)]
    second = await commit(db, node_lease, append(topic, 0, 2, extra=1))  # two batches
    assert second == [Appended(A.APPENDED, 4, 7, 0)]
    assert await next_offsets(db, topic) == [8, 1]
    async with db.transaction() as tx:
        index = await tx.fetchall(
            "SELECT base_offset, last_offset, record_count FROM stream_batches"
            " WHERE topic_id = %s AND partition = 0 ORDER BY base_offset", (topic,),
        )
        refs = await tx.fetchall("SELECT refs FROM stream_objects ORDER BY created_at")
    assert index == [(0, 2, 3), (3, 3, 1), (4, 5, 2), (6, 7, 2)]
    assert [r[0] for r in refs] == [3, 2]


async def test_rerunning_a_committed_flush_answers_as_it_did_and_writes_nothing(
    db: Database, node_lease: NodeLease
) -> None:
    topic = (await create_topic(db, node_lease, "orders", 1)).topic_id
    await commit(db, node_lease, append(topic, 0, pid=7, epoch=0, seq=0))
    flush = plan(
        append(topic, 0, 2),
        append(topic, 0, pid=7, epoch=0, seq=0),  # a duplicate
        append(topic, 0, pid=7, epoch=0, seq=5),  # a gap
        append(topic, 9),  # no such partition
    )
    first = await commit_flush(db, node_lease, flush)
    assert [a.status for a in first] == [A.APPENDED, A.DUPLICATE, A.OUT_OF_ORDER_SEQUENCE,
                                         A.UNKNOWN_PARTITION]
    batches = await rows(db, "SELECT count(*) FROM stream_batches")
    # the same flush id again, as after a commit whose outcome was unknown
    assert await commit_flush(db, node_lease, flush) == first
    assert await rows(db, "SELECT count(*) FROM stream_batches") == batches
    assert await rows(db, "SELECT count(*) FROM stream_objects") == 2
    assert await next_offsets(db, topic) == [3]


async def test_idempotent_producers_statuses(db: Database, node_lease: NodeLease) -> None:
    topic = (await create_topic(db, node_lease, "orders", 1)).topic_id
    ok = await commit(db, node_lease, append(topic, 0, 2, pid=1, epoch=3, seq=0))
    assert ok == [Appended(A.APPENDED, 0, 1, 0)]
    answers = await commit(
        db, node_lease,
        append(topic, 0, 2, pid=1, epoch=3, seq=0),  # the same batch again
        append(topic, 0, pid=1, epoch=3, seq=5),  # sequence 2 expected
        append(topic, 0, pid=1, epoch=2, seq=2),  # an older epoch
        append(topic, 0, pid=1, epoch=4, seq=1),  # a new epoch starts at 0
        append(topic, 0, pid=1, epoch=3, seq=2),  # in sequence
        append(topic, 0, pid=1, epoch=3, seq=2),  # a retry within the same flush
        append(topic, 0, 2, pid=1, epoch=3, seq=0, extra=1),  # a retry sent with a new batch
        append(topic, 0, pid=2, epoch=0, seq=17),  # a producer the partition never saw
    )
    assert answers == [
        Appended(A.DUPLICATE, 0, 1, 0),
        Appended(A.OUT_OF_ORDER_SEQUENCE),
        Appended(A.INVALID_PRODUCER_EPOCH),
        Appended(A.OUT_OF_ORDER_SEQUENCE),
        Appended(A.APPENDED, 2, 2, 0),
        Appended(A.DUPLICATE, 2, 2, 0),
        Appended(A.DUPLICATE_SEQUENCE),
        Appended(A.APPENDED, 3, 3, 0),
    ]
    bumped = await commit(db, node_lease, append(topic, 0, pid=1, epoch=4, seq=0))
    assert bumped == [Appended(A.APPENDED, 4, 4, 0)]
    stale = await commit(db, node_lease, append(topic, 0, pid=1, epoch=3, seq=3))
    assert stale == [Appended(A.INVALID_PRODUCER_EPOCH)]


async def test_unknown_and_deleted_partitions_are_refused_alone(
    db: Database, node_lease: NodeLease
) -> None:
    topic = (await create_topic(db, node_lease, "orders", 1)).topic_id
    gone = (await create_topic(db, node_lease, "gone", 1)).topic_id
    await delete_topic(db, node_lease, "gone")
    answers = await commit(
        db, node_lease, append(uuid.uuid4(), 0), append(topic, 1), append(gone, 0),
        append(topic, 0),
    )
    assert [a.status for a in answers] == [A.UNKNOWN_PARTITION] * 3 + [A.APPENDED]
    assert answers[0] == Appended(A.UNKNOWN_PARTITION, -1, -1, -1)


async def test_a_flush_with_nothing_accepted_leaves_an_unreferenced_object(
    db: Database, node_lease: NodeLease
) -> None:
    assert (await commit(db, node_lease, append(uuid.uuid4(), 0)))[0].status is (
        A.UNKNOWN_PARTITION
    )
    assert await rows(
        db, "SELECT count(*) FROM stream_objects WHERE refs = 0 AND unreferenced_since IS NOT NULL"
    ) == 1


@pytest.mark.parametrize("how", ["superseded", "expired"])
async def test_a_stale_lease_commits_nothing(
    db: Database, node_lease: NodeLease, how: str
) -> None:
    topic = (await create_topic(db, node_lease, "orders", 1)).topic_id
    if how == "superseded":
        again = Membership(db, "node-a", "127.0.0.1", {"kafka": 9092},
                           MembershipSettings(heartbeat_interval=1.0, lease_duration=60.0))
        await again.register()
    else:
        async with db.transaction() as tx:
            await tx.execute("UPDATE nodes SET lease_expires_at = clock_timestamp()"
                             " - interval '1 second'")
    with pytest.raises(LeaseLostError, match="expired or was replaced"):
        await commit(db, node_lease, append(topic, 0, pid=1, epoch=0, seq=0))
    for table in ("stream_objects", "stream_batches", "stream_producers"):
        assert await rows(db, f"SELECT count(*) FROM {table}") == 0  # noqa: S608 - fixed names
    assert await next_offsets(db, topic) == [0]


async def test_the_commit_notifies_listeners_of_the_new_high_watermarks(
    db: Database, node_lease: NodeLease, database_url: str
) -> None:
    orders = (await create_topic(db, node_lease, "orders", 2)).topic_id
    other = (await create_topic(db, node_lease, "other", 1)).topic_id
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listener:
        await listener.execute(f"LISTEN {NOTIFY_CHANNEL}")
        await commit(db, node_lease, append(orders, 1, 3), append(other, 0), append(orders, 1))
        async with asyncio.timeout(BOUND_S):
            note = await anext(aiter(listener.notifies()))
    assert note.channel == NOTIFY_CHANNEL
    expected = sorted([f"{orders.hex}:1:4", f"{other.hex}:0:1"])
    assert sorted(note.payload.split(" ")) == expected
    assert note.payload == notify_payload({(orders, 1): 4, (other, 0): 1})


def test_a_payload_past_the_limit_asks_for_a_full_refresh() -> None:
    many = {(uuid.uuid4(), p): 10**12 for p in range(300)}
    assert notify_payload(many) == "*"
    one = uuid.UUID(int=5)
    assert notify_payload({(one, 3): 12, (one, 1): 7}) == f"{one.hex}:1:7 {one.hex}:3:12"
