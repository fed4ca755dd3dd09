"""The background jobs' leases on the real database: one holder at a time, taken over only
from a registration that is over (replaced or expired), and a stale holder commits nothing in
any job."""

from __future__ import annotations

import asyncio

import pytest

from helpers.stream_jobs import append, index_keys, object_rows, register, rows, start_writer
from wharf.cluster.catalog import NodeLease, create_topic
from wharf.cluster.database import Database
from wharf.cluster.nodes import LeaseLostError, Membership, MembershipSettings
from wharf.cluster.objectstore import ObjectStore
from wharf.cluster.streams.compactor import CompactionSettings, compact
from wharf.cluster.streams.gc import GcSettings, collect_garbage, sweep_orphans
from wharf.cluster.streams.leases import JOBS, acquire_job_lease, job_lease_holder
from wharf.cluster.streams.retention import delete_records, drop_deleted_topics, enforce_retention

NOW = GcSettings(gc_grace=0.0, orphan_grace=0.0)


async def test_one_holder_at_a_time(db: Database, node_lease: NodeLease) -> None:
    _, other = await register(db, "node-b")
    for job in JOBS:
        assert await acquire_job_lease(db, node_lease, job)
        assert not await acquire_job_lease(db, other, job)
        assert await acquire_job_lease(db, node_lease, job)  # kept
        assert await job_lease_holder(db, job) == node_lease


async def test_a_replaced_registration_loses_its_jobs(db: Database, node_lease: NodeLease) -> None:
    _, other = await register(db, "node-b")
    assert await acquire_job_lease(db, node_lease, "gc")
    _, renewed = await register(db, "node-a")  # node-a restarted: a new epoch
    assert renewed.epoch != node_lease.epoch
    assert await acquire_job_lease(db, other, "gc")
    assert await job_lease_holder(db, "gc") == other
    assert not await acquire_job_lease(db, node_lease, "gc")
    assert not await acquire_job_lease(db, renewed, "gc")
    with pytest.raises(LeaseLostError):  # a free job needs a live node lease
        await acquire_job_lease(db, node_lease, "retention")


async def test_an_expired_holder_loses_its_jobs(db: Database, node_lease: NodeLease) -> None:
    short = Membership(
        db, "node-s", "127.0.0.1", {"kafka": 9092},
        MembershipSettings(heartbeat_interval=0.05, lease_duration=0.2),
    )
    await short.register()
    dying = NodeLease.of(short)
    assert await acquire_job_lease(db, dying, "orphans")
    assert not await acquire_job_lease(db, node_lease, "orphans")
    await asyncio.sleep(0.4)  # no heartbeats: its lease ends by the database's clock
    assert await acquire_job_lease(db, node_lease, "orphans")
    assert await job_lease_holder(db, "orphans") == node_lease


async def test_a_stale_holder_commits_nothing_in_any_job(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    topic = (await create_topic(db, node_lease, "stale", 1)).topic_id
    writer = start_writer(db, test_store, node_lease)
    for i in range(6):
        await append(writer, topic, 0, [b"s%d" % i], timestamp_ms=1)
    await writer.close()
    await delete_records(db, node_lease, topic, 0, 1)  # one object for the collector
    await test_store.put("intake/nobody/orphan", b"x")  # one for the sweep
    for job in JOBS:
        assert await acquire_job_lease(db, node_lease, job)
    _, renewed = await register(db, "node-a")  # the holder's epoch is replaced
    _, other = await register(db, "node-b")
    for job in ("compactor", "gc"):
        assert await acquire_job_lease(db, other, job)  # two jobs moved on, two did not

    index = await rows(db, "SELECT * FROM stream_batches ORDER BY base_offset")
    objects = await object_rows(db)
    stored = {info.key for info in await test_store.list()}
    for stale in (node_lease, renewed):  # the old epoch, and the new one holding no job
        with pytest.raises(LeaseLostError):
            await compact(db, test_store, stale, CompactionSettings(0.0, 2))
        with pytest.raises(LeaseLostError):
            await enforce_retention(
                db, stale, topic, 0, retention_ms=1, retention_bytes=None, now_ms=10_000
            )
        with pytest.raises(LeaseLostError):
            await drop_deleted_topics(db, stale)
        with pytest.raises(LeaseLostError):
            await collect_garbage(db, test_store, stale, NOW)
        with pytest.raises(LeaseLostError):
            await sweep_orphans(db, test_store, stale, NOW)
    assert await rows(db, "SELECT * FROM stream_batches ORDER BY base_offset") == index
    assert await object_rows(db) == objects
    # the compaction's object was PUT before its fenced commit failed: an orphan, unnamed
    left = {info.key for info in await test_store.list()} - stored
    assert all(key.startswith(f"p/{topic}/") for key in left)
    assert not left & await index_keys(db)
