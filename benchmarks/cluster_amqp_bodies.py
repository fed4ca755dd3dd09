"""Where a cluster's AMQP bodies should live: in their PostgreSQL rows or in the object store.

Usage: ``PYTHONPATH=src .venv/bin/python benchmarks/cluster_amqp_bodies.py [--count N]``

Starts the tests' throwaway PostgreSQL (``durable``: fsync on, as deployed) and SeaweedFS
(``tests/helpers/``), migrates a database, and for each body size runs the real message paths
of ``wharf.cluster.queues`` twice, once with every body in its row and once with every body in
the object store (``Bodies`` with a threshold of 0): N messages published one at a time
(``MessageWriter.publish``, awaited: the confirm latency), then claimed one at a time with
their bodies read back and deleted (``claim`` + ``Bodies.fetch`` + ``Settler.delete``). It
prints the p50 of each step and the WAL the database wrote per message (what replicas,
backups and archiving carry, and what vacuum cleans up after), to choose the threshold.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.postgres_server import postgres_server  # noqa: E402
from helpers.s3_server import S3Server, run_s3_server  # noqa: E402
from wharf.cluster.catalog import NodeLease  # noqa: E402
from wharf.cluster.database import Database  # noqa: E402
from wharf.cluster.migrations import migrate  # noqa: E402
from wharf.cluster.nodes import Membership, MembershipSettings  # noqa: E402
from wharf.cluster.objectstore import ObjectStore, ObjectStoreConfig  # noqa: E402
from wharf.cluster.queues import definitions as defs  # noqa: E402
from wharf.cluster.queues import messages as msgs  # noqa: E402
from wharf.cluster.queues.bodies import Bodies  # noqa: E402

SIZES = {"16 KiB": 16 << 10, "64 KiB": 64 << 10, "128 KiB": 128 << 10, "256 KiB": 256 << 10,
         "1 MiB": 1 << 20, "4 MiB": 4 << 20}  # fmt: skip


def ms(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:.1f}"


async def wal(db: Database) -> int:
    async with db.transaction() as tx:
        return int(await tx.fetchval("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn"))


async def run(db: Database, lease: NodeLease, bodies: Bodies | None, size: int,
              count: int) -> tuple[str, str, str, float]:  # fmt: skip
    row, _ = await defs.declare_queue(
        db, defs.QueueRow(0, "/", f"q-{size}-{bodies is not None}", True, False, "")
    )
    writer = msgs.MessageWriter(db, bodies)
    settler = msgs.Settler(db, lease.node_id)
    body = os.urandom(size)
    before = await wal(db)
    publish, consume = [], []
    for _ in range(count):
        start = time.perf_counter()
        await writer.publish([msgs.NewMessage(row.id, 0, None, "", "q", b"", body)])
        publish.append(time.perf_counter() - start)
    for _ in range(count):
        start = time.perf_counter()
        [claimed] = await msgs.claim(db, lease, row.id, 1)
        if claimed.body_key is not None and bodies is not None:
            got = (await bodies.fetch([claimed.body_key]))[claimed.body_key]
            assert got == body
        settler.delete(lease.epoch, [claimed.seq])
        consume.append(time.perf_counter() - start)
    await settler.close()
    total = publish + consume
    per_message_wal = (await wal(db) - before) / count / 1024
    return ms(publish), ms(consume), f"{sum(total) / count * 1000:.1f}", per_message_wal


async def measure(url: str, s3: S3Server, count: int) -> None:
    db = await Database.connect(url, node_id="bench")
    config = ObjectStoreConfig.from_url(
        "s3://wharf-bench/bodies", endpoint=s3.endpoint, region=s3.region,
        access_key=s3.access_key, secret_key=s3.secret_key,
    )  # fmt: skip
    try:
        await migrate(db)
        settings = MembershipSettings(heartbeat_interval=1.0, lease_duration=600)
        membership = Membership(db, "bench", "127.0.0.1", {}, settings)
        await membership.register()
        lease = NodeLease.of(membership)
        async with await ObjectStore.open(config) as store:
            print("| size | where | publish p50 ms | claim+read+ack p50 ms | mean ms/message"
                  " | WAL KiB/message |")  # fmt: skip
            print("|---|---|---:|---:|---:|---:|")
            for label, size in SIZES.items():
                for where, bodies in (("row", None), ("object", Bodies(store, 0))):
                    p, c, mean, w = await run(db, lease, bodies, size, count)
                    print(f"| {label} | {where} | {p} | {c} | {mean} | {w:.0f} |", flush=True)
    finally:
        await db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=40)
    args = parser.parse_args()
    with postgres_server(durable=True) as server, run_s3_server() as s3:
        url = server.create_database("bench_bodies")
        asyncio.run(measure(url, s3, args.count))


if __name__ == "__main__":
    main()
