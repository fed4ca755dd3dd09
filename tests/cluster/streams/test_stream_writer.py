"""StreamWriter end to end on the real engines: two nodes appending to the same partitions get
dense offsets, a producer's retry through another node is answered with the original offsets,
a stale lease or an unreachable store commits nothing, and each committed object reaches
``on_object`` whole."""

from __future__ import annotations

import asyncio
import socket
from collections import defaultdict

import pytest

from wharf.cluster.catalog import NodeLease, create_topic
from wharf.cluster.database import Database
from wharf.cluster.nodes import LeaseLostError, Membership, MembershipSettings
from wharf.cluster.objectstore import ObjectStore, ObjectStoreConfig, ObjectStoreError
from wharf.cluster.streams.objects import decode_footer
from wharf.cluster.streams.writer import Appended, AppendStatus, StreamWriter, WriterSettings
from wharf.storage.record_batch import RecordInput, build_batch
from wharf.storage.validated import ValidatedBatches, validate_batches

BOUND_S = 60.0
LONG = MembershipSettings(heartbeat_interval=1.0, lease_duration=60.0)
FAST = WriterSettings(flush_window=0.005, commit_timeout=10.0)


def batches(value: bytes, records: int = 1, *, pid: int = -1, seq: int = -1) -> ValidatedBatches:
    data = build_batch(
        [RecordInput(None, value + b"/%d" % i) for i in range(records)],
        producer_id=pid, producer_epoch=0 if pid >= 0 else -1, base_sequence=seq,
    )
    return validate_batches(data, 1 << 20)


async def register(db: Database, node_id: str) -> NodeLease:
    membership = Membership(db, node_id, "127.0.0.1", {"kafka": 9092}, LONG)
    await membership.register()
    return NodeLease.of(membership)


def writer(db: Database, store: ObjectStore, lease: NodeLease, **hooks: object) -> StreamWriter:
    w = StreamWriter(db, store, lease.node_id, lambda: lease, FAST, **hooks)  # type: ignore[arg-type]
    w.start()
    return w


async def count(db: Database, table: str) -> int:
    async with db.transaction() as tx:
        return int(await tx.fetchval(f"SELECT count(*) FROM {table}"))  # noqa: S608


async def test_two_nodes_appending_to_the_same_partitions_get_dense_offsets(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    topic = (await create_topic(db, node_lease, "orders", 2)).topic_id
    lease_b = await register(db, "node-b")
    writers = [writer(db, test_store, node_lease), writer(db, test_store, lease_b)]

    async def produce(w: StreamWriter, name: bytes) -> list[tuple[int, Appended]]:
        out = []
        for i in range(15):
            partition = i % 2
            out.append((partition, await w.append(topic, partition, batches(name, 1 + i % 3))))
        return out

    async with asyncio.timeout(BOUND_S):
        results = await asyncio.gather(
            *(produce(w, b"%d-%d" % (n, c)) for n, w in enumerate(writers) for c in range(3))
        )
        for w in writers:
            await w.close()
    ranges: dict[int, list[tuple[int, int]]] = defaultdict(list)
    for answers in results:
        for partition, answer in answers:
            assert answer.status is AppendStatus.APPENDED
            ranges[partition].append((answer.base_offset, answer.last_offset))
    async with db.transaction() as tx:
        index = await tx.fetchall(
            "SELECT partition, base_offset, last_offset FROM stream_batches"
            " ORDER BY partition, base_offset"
        )
        ends = await tx.fetchall(
            "SELECT next_offset FROM stream_partitions WHERE topic_id = %s ORDER BY partition",
            (topic,),
        )
    for partition in (0, 1):
        spans = sorted(ranges[partition])
        expected_next = 0
        for base, last in spans:  # every offset taken once, none skipped
            assert base == expected_next
            expected_next = last + 1
        assert ends[partition][0] == expected_next
        assert [(b, e) for p, b, e in index if p == partition] == spans


async def test_a_retry_through_another_node_gets_the_original_offsets(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    topic = (await create_topic(db, node_lease, "orders", 1)).topic_id
    lease_b = await register(db, "node-b")
    a, b = writer(db, test_store, node_lease), writer(db, test_store, lease_b)
    async with asyncio.timeout(BOUND_S):
        await a.append(topic, 0, batches(b"plain"))
        sent = batches(b"idem", 3, pid=11, seq=0)
        first = await a.append(topic, 0, sent)
        again = await a.append(topic, 0, sent)
        elsewhere = await b.append(topic, 0, sent)
        gap = await b.append(topic, 0, batches(b"idem", pid=11, seq=9))
        await a.close()
        await b.close()
    assert first == Appended(AppendStatus.APPENDED, 1, 3, 0)
    assert again == Appended(AppendStatus.DUPLICATE, 1, 3, 0)
    assert elsewhere == again
    assert gap.status is AppendStatus.OUT_OF_ORDER_SEQUENCE
    assert await count(db, "stream_batches") == 2


@pytest.mark.parametrize("how", ["superseded", "expired"])
async def test_a_writer_whose_lease_is_stale_commits_nothing(
    db: Database, node_lease: NodeLease, test_store: ObjectStore, how: str
) -> None:
    topic = (await create_topic(db, node_lease, "orders", 1)).topic_id
    w = writer(db, test_store, node_lease)
    if how == "superseded":
        await register(db, "node-a")  # the same node id, registered again: a new epoch
    else:
        async with db.transaction() as tx:
            await tx.execute(
                "UPDATE nodes SET lease_expires_at = clock_timestamp() - interval '1 second'"
            )
    async with asyncio.timeout(BOUND_S):
        with pytest.raises(LeaseLostError):
            await w.append(topic, 0, batches(b"late"))
        await w.close()
    for table in ("stream_objects", "stream_batches"):
        assert await count(db, table) == 0


async def test_an_unreachable_store_fails_the_append_and_writes_no_rows(
    db: Database, node_lease: NodeLease
) -> None:
    topic = (await create_topic(db, node_lease, "orders", 1)).topic_id
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = ObjectStoreConfig.from_url(
        "s3://wharf-tests/down", endpoint=f"http://127.0.0.1:{port}", region="us-east-1",
        access_key="k", secret_key="s",
    )
    config = ObjectStoreConfig(
        config.bucket, config.prefix, config.endpoint, config.region, config.access_key,
        config.secret_key, connect_timeout=0.5, request_timeout=0.5, operation_timeout=2.0,
        max_attempts=1,
    )
    store = ObjectStore(config, None)
    w = writer(db, store, node_lease)
    async with asyncio.timeout(BOUND_S):
        with pytest.raises(ObjectStoreError):
            await w.append(topic, 0, batches(b"lost"))
        await w.close()
    assert await count(db, "stream_objects") == 0
    assert await count(db, "stream_batches") == 0


async def test_committed_objects_reach_the_hook_and_latencies_are_observed(
    db: Database, node_lease: NodeLease, test_store: ObjectStore
) -> None:
    topics = [(await create_topic(db, node_lease, n, 2)).topic_id for n in ("a", "b")]
    objects: list[tuple[str, bytes]] = []
    observed: list[str] = []
    w = writer(db, test_store, node_lease,
               on_object=lambda k, d: objects.append((k, d)),
               observe=lambda name, _s: observed.append(name))
    async with asyncio.timeout(BOUND_S):
        answers = await asyncio.gather(
            w.append(topics[1], 1, batches(b"x", 2)),
            w.append(topics[0], 0, batches(b"y")),
            w.append(topics[1], 1, batches(b"z")),
        )
        await w.close()
    assert [a.status for a in answers] == [AppendStatus.APPENDED] * 3
    assert len(objects) == 1
    key, data = objects[0]
    assert key.startswith("intake/node-a/")
    assert await test_store.get(key) == data
    sections = decode_footer(data)
    assert sorted((s.topic_id, s.partition, s.records) for s in sections) == sorted(
        [(topics[0], 0, 1), (topics[1], 1, 3)]
    )
    async with db.transaction() as tx:
        placed = await tx.fetchall(
            "SELECT byte_start, byte_length, base_offset FROM stream_batches"
            " WHERE topic_id = %s ORDER BY base_offset", (topics[1],),
        )
    # the index points at the producer's bytes: a batch's byte range validates on its own
    assert [validate_batches(data[s : s + n], 1 << 20).records for s, n, _ in placed] == [2, 1]
    assert set(observed) == {"streams.put", "streams.commit", "streams.flush"}
