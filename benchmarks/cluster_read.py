"""The cluster's read path on a local PostgreSQL and SeaweedFS: fetch latency with the object
cache cold (one GET per object) and warm (no GET), and at the high watermark (the index query
alone).

Starts the test suite's PostgreSQL and SeaweedFS (``tests/helpers``), writes ``--flushes``
intake objects of ``--batches`` 1 KiB batches each for one partition, the way the writer's
commit leaves them (object, ``stream_objects`` and ``stream_batches`` rows, next offset), then
reads each flush's batches back with :class:`wharf.cluster.streams.reader.StreamReader`:
first with an empty cache, then again from the cache. Prints p50/p99 per read.

    PYTHONPATH=src .venv/bin/python benchmarks/cluster_read.py [--flushes 200] [--batches 16]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.postgres_server import postgres_server  # noqa: E402
from helpers.s3_server import S3Server, run_s3_server  # noqa: E402
from wharf.cluster.catalog import NodeLease, create_topic  # noqa: E402
from wharf.cluster.database import Database, Transaction  # noqa: E402
from wharf.cluster.migrations import migrate  # noqa: E402
from wharf.cluster.nodes import Membership, MembershipSettings  # noqa: E402
from wharf.cluster.objectstore import ObjectStore, ObjectStoreConfig  # noqa: E402
from wharf.cluster.streams.reader import StreamReader  # noqa: E402
from wharf.storage.record_batch import RecordInput, build_batch  # noqa: E402

RECORDS_PER_BATCH = 4
VALUE = b"v" * 240  # four records: about 1 KiB a batch


async def write_flush(
    db: Database, store: ObjectStore, lease: NodeLease, topic: uuid.UUID, batches: int
) -> None:
    one = build_batch([RecordInput(None, VALUE)] * RECORDS_PER_BATCH)
    key = f"intake/{lease.node_id}/{uuid.uuid4()}"
    await store.put(key, one * batches)

    async def body(tx: Transaction) -> None:
        await tx.execute(
            "INSERT INTO stream_objects (key, kind, flush_id, size, node_id, node_epoch,"
            " created_at, refs, state)"
            " VALUES (%s, 'intake', %s, %s, %s, %s, clock_timestamp(), %s, 'live')",
            (key, uuid.uuid4(), len(one) * batches, lease.node_id, lease.epoch, batches),
        )
        base = await tx.fetchval(
            "SELECT next_offset FROM stream_partitions WHERE topic_id = %s AND partition = 0"
            " FOR UPDATE",
            (topic,),
        )
        await tx.executemany(
            "INSERT INTO stream_batches (topic_id, partition, base_offset, last_offset,"
            " object_key, byte_start, byte_length, record_count, first_timestamp,"
            " max_timestamp, producer_id, producer_epoch, base_sequence, attributes)"
            " VALUES (%s, 0, %s, %s, %s, %s, %s, %s, 0, 0, -1, -1, -1, 0)",
            [
                (
                    topic,
                    base + i * RECORDS_PER_BATCH,
                    base + (i + 1) * RECORDS_PER_BATCH - 1,
                    key,
                    i * len(one),
                    len(one),
                    RECORDS_PER_BATCH,
                )
                for i in range(batches)
            ],
        )
        await tx.execute(
            "UPDATE stream_partitions SET next_offset = %s WHERE topic_id = %s AND partition = 0",
            (base + batches * RECORDS_PER_BATCH, topic),
        )

    await db.run(body)


async def timed_reads(
    reader: StreamReader, topic: uuid.UUID, offsets: list[int], max_bytes: int
) -> list[float]:
    took = []
    for offset in offsets:
        start = time.perf_counter()
        await reader.read(topic, 0, offset, max_bytes)
        took.append((time.perf_counter() - start) * 1000)
    return took


def row(name: str, took: list[float]) -> str:
    p99 = statistics.quantiles(took, n=100)[98] if len(took) >= 2 else took[0]
    return f"{name:<28} {len(took):>6} {statistics.median(took):>9.2f} {p99:>9.2f}"


async def run(url: str, s3: S3Server, args: argparse.Namespace) -> None:
    config = ObjectStoreConfig.from_url(
        f"s3://wharf-bench/read-{uuid.uuid4().hex[:8]}",
        endpoint=s3.endpoint, region=s3.region, access_key=s3.access_key,
        secret_key=s3.secret_key,
    )
    async with (
        await Database.connect(url, node_id="bench") as db,
        await ObjectStore.open(config) as store,
    ):
        await migrate(db)
        membership = Membership(
            db, "bench", "127.0.0.1", {"kafka": 9092},
            MembershipSettings(heartbeat_interval=1.0, lease_duration=600.0),
        )
        await membership.register()
        lease = NodeLease.of(membership)
        topic = (await create_topic(db, lease, "bench", 1)).topic_id
        for _ in range(args.flushes):
            await write_flush(db, store, lease, topic, args.batches)
        per_flush = args.batches * RECORDS_PER_BATCH
        offsets = [i * per_flush for i in range(args.flushes)]
        flush_bytes = args.batches * 1100
        reader = StreamReader(db, store)
        cold = await timed_reads(reader, topic, offsets, flush_bytes)
        gets = reader.cache_misses
        warm = await timed_reads(reader, topic, offsets, flush_bytes)
        at_hw = await timed_reads(reader, topic, [args.flushes * per_flush] * args.flushes, 1)
        print(f"{args.flushes} intake objects of {args.batches} batches (~1 KiB each)")
        print(f"{'read':<28} {'reads':>6} {'p50 ms':>9} {'p99 ms':>9}")
        print(row(f"cache miss ({gets} GETs)", cold))
        print(row(f"cache hit ({reader.cache_misses - gets} GETs)", warm))
        print(row("at the high watermark", at_hw))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--flushes", type=int, default=200)
    parser.add_argument("--batches", type=int, default=16)
    args = parser.parse_args()
    with (
        tempfile.TemporaryDirectory() as tmp,
        postgres_server() as pg,
        run_s3_server(Path(tmp)) as s3,
    ):
        asyncio.run(run(pg.create_database("bench_read"), s3, args))


if __name__ == "__main__":
    main()
