"""The cluster's background jobs as a broker runs them: retention from the topics' configs,
compaction and collection through ``ClusterMaintenance`` on two brokers (one holds each job),
DeleteRecords on one broker seen by the other, and the runner a broker starts on its own."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from wharf.cluster.database import Database
from wharf.cluster.migrations import migrate
from wharf.cluster.nodes import Membership, MembershipSettings
from wharf.cluster.objectstore import ObjectStore
from wharf.core.broker import Broker
from wharf.core.cluster_node import ClusterNode
from wharf.core.config import BrokerConfig, ClusterJobSettings
from wharf.core.streams.cluster_maintenance import ClusterMaintenance
from wharf.errors import OffsetOutOfRangeError

BOUND_S = 60.0
EAGER = ClusterJobSettings(
    interval_ms=50, compact_after_ms=0, compact_min_batches=2, gc_grace_ms=0, orphan_grace_ms=0
)


def runner(broker: Broker) -> ClusterMaintenance:
    assert broker.cluster is not None
    config = dataclasses.replace(broker.config, cluster_jobs=EAGER)
    return ClusterMaintenance(broker.cluster, broker.topics, config, broker.clock)  # type: ignore[arg-type]


async def stored(broker: Broker) -> list[str]:
    assert broker.cluster is not None
    return [info.key for info in await broker.cluster.store.list()]


async def referenced(db: Database) -> set[str]:
    async with db.transaction() as tx:
        return {r[0] for r in await tx.fetchall("SELECT object_key FROM stream_batches")}


async def test_retention_follows_the_topic_config_on_the_node_holding_the_job(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.create_topic("sized", 1, {"retention.bytes": "1"})
    await one.create_topic("forever", 1, {"retention.ms": "-1"})
    for i in range(5):
        await one.produce("sized", b"v%d" % i, partition=0)
        await one.produce("forever", b"f%d" % i, partition=0)
    first, second = runner(one), runner(two)
    assert await first.run("retention")
    assert not await second.run("retention")  # one node at a time
    assert first.counts["retention"].items == 4
    assert (first.counts["retention"].runs, second.counts["retention"].runs) == (1, 0)
    assert first.counts["retention"].failures == 0
    sized = two.topics.partition("sized", 0)
    assert await sized.find_offset(-2) == (4, -1)
    with pytest.raises(OffsetOutOfRangeError):
        await sized.fetch(0, 1 << 20)
    assert [r.value for r in await two.fetch("sized", 0, 4)] == [b"v4"]
    assert len(await two.fetch("forever", 0, 0)) == 5


async def test_compaction_and_collection_keep_every_record(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.create_topic("packed", 2)
    for i in range(12):
        await (one if i % 2 else two).produce("packed", b"p%d" % i, partition=i % 3 % 2)
    before = {p: await two.fetch("packed", p, 0) for p in (0, 1)}
    intake = await stored(one)
    assert len(intake) == 12
    first = runner(one)
    async with asyncio.timeout(BOUND_S):
        assert await first.run("compactor")
        assert first.counts["compactor"].items == 2
        assert await first.run("gc")
        assert first.counts["gc"].items == 12
    assert all(key.startswith("p/") for key in await stored(one))
    assert {p: await one.fetch("packed", p, 0) for p in (0, 1)} == before
    assert await first.run("orphans")
    assert first.counts["orphans"].items == 0


async def test_delete_records_on_one_broker_is_seen_by_the_other(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.create_topic("trim", 1)
    for i in range(4):
        await two.produce("trim", b"t%d" % i, partition=0)
    theirs = two.topics.partition("trim", 0)
    assert theirs.log_start_offset == 0
    assert await one.topics.partition("trim", 0).delete_records(3) == 3
    async with asyncio.timeout(BOUND_S):  # the catalogue's notification moves its cache
        while theirs.log_start_offset != 3:
            await asyncio.sleep(0.01)
    assert [r.offset for r in await two.fetch("trim", 0, 3)] == [3]
    with pytest.raises(OffsetOutOfRangeError):
        await theirs.delete_records(5)


async def test_a_broker_runs_its_jobs_on_its_own(
    db: Database, test_store: ObjectStore, tmp_path: Path
) -> None:
    await migrate(db)
    membership = Membership(
        db, "solo", "127.0.0.1", {"kafka": 9092},
        MembershipSettings(heartbeat_interval=1.0, lease_duration=60.0),
    )
    await membership.register()
    node = ClusterNode("solo", 1, db, test_store, membership)
    config = BrokerConfig(auto_create_topics=False, cluster_jobs=EAGER)
    async with Broker.open(tmp_path, config, cluster=node) as broker:
        await broker.create_topic("auto", 1)
        for i in range(4):
            await broker.produce("auto", b"a%d" % i, partition=0)
        async with asyncio.timeout(BOUND_S):  # compacted, and what was left collected
            while True:
                keys = set(await stored(broker))
                if any(k.startswith("p/") for k in keys) and keys == await referenced(db):
                    break
                await asyncio.sleep(0.05)
        assert [r.value for r in await broker.fetch("auto", 0, 0)] == [
            b"a0", b"a1", b"a2", b"a3"
        ]
