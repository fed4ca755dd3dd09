"""PostgreSQL drivers for the cluster catalogue: psycopg 3 (async, with its pool) against asyncpg.

Usage: ``python benchmarks/cluster_database.py [--transactions N] [--seconds S] [--clients C]``

Starts a throwaway local PostgreSQL (``tests/helpers/postgres_server.py``), once with fsync on
(PostgreSQL's defaults, what a deployment runs) and once with fsync off (what is left is the
driver and the server's CPU), and for each driver measures:

- ``txn p50/p99``: one client, N single-row transactions the way offset assignment will run
  them: ``BEGIN; SELECT next_offset ... FOR UPDATE; UPDATE ... SET next_offset = ...; COMMIT``,
  each taking a connection from the pool;
- ``txn/s x C``: C concurrent clients (one pool of C connections), each on its own row, for S
  seconds, and the benchmark process's CPU time per transaction meanwhile (the driver's cost on a
  node: the server runs in its own processes);
- ``insert 1k``: the median time to insert 1,000 index-like rows in one transaction, with
  ``executemany`` and with ``COPY``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.postgres_server import postgres_server  # noqa: E402

SCHEMA = """
DROP TABLE IF EXISTS bench_offsets, bench_index;
CREATE TABLE bench_offsets (partition int PRIMARY KEY, next_offset bigint NOT NULL);
INSERT INTO bench_offsets SELECT g, 0 FROM generate_series(0, 255) g;
CREATE TABLE bench_index (
    partition int NOT NULL, base_offset bigint NOT NULL, object text NOT NULL,
    position int NOT NULL, size int NOT NULL, PRIMARY KEY (partition, base_offset));
"""
SELECT_SQL = "SELECT next_offset FROM bench_offsets WHERE partition = {} FOR UPDATE"
UPDATE_SQL = "UPDATE bench_offsets SET next_offset = {} WHERE partition = {}"
INSERT_SQL = (
    "INSERT INTO bench_index (partition, base_offset, object, position, size) "
    "VALUES ({}, {}, {}, {}, {})"
)
INDEX_COLUMNS = ("partition", "base_offset", "object", "position", "size")
Row = tuple[int, int, str, int, int]


@dataclass
class Figures:
    p50_ms: float
    p99_ms: float
    txn_per_s: float
    cpu_us: float
    executemany_ms: float
    copy_ms: float


class Driver:
    """One driver behind the four operations the benchmark times."""

    name = ""

    async def open(self, url: str, size: int) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def setup(self) -> None:
        raise NotImplementedError

    async def assign(self, partition: int) -> int:
        """One offset-assignment transaction; returns the offset assigned."""
        raise NotImplementedError

    async def insert_many(self, rows: list[Row]) -> None:
        raise NotImplementedError

    async def copy(self, rows: list[Row]) -> None:
        raise NotImplementedError


class Psycopg(Driver):
    name = "psycopg 3.3 + pool"

    async def open(self, url: str, size: int) -> None:
        from psycopg_pool import AsyncConnectionPool

        self.pool: Any = AsyncConnectionPool(
            url, min_size=size, max_size=size, open=False, kwargs={"autocommit": True}
        )
        await self.pool.open(wait=True)

    async def close(self) -> None:
        await self.pool.close()

    async def setup(self) -> None:
        async with self.pool.connection() as conn:
            await conn.execute(SCHEMA)

    async def assign(self, partition: int) -> int:
        async with self.pool.connection() as conn, conn.transaction():
            cur = await conn.execute(SELECT_SQL.format("%s"), (partition,))
            row = await cur.fetchone()
            offset: int = row[0]
            await conn.execute(UPDATE_SQL.format("%s", "%s"), (offset + 1, partition))
            return offset

    async def insert_many(self, rows: list[Row]) -> None:
        async with self.pool.connection() as conn, conn.transaction():
            async with conn.cursor() as cur:
                await cur.executemany(INSERT_SQL.format(*["%s"] * 5), rows)

    async def copy(self, rows: list[Row]) -> None:
        columns = ", ".join(INDEX_COLUMNS)
        async with self.pool.connection() as conn, conn.transaction():
            async with conn.cursor() as cur:
                async with cur.copy(f"COPY bench_index ({columns}) FROM STDIN") as copy:
                    for row in rows:
                        await copy.write_row(row)


class Asyncpg(Driver):
    name = "asyncpg 0.32 pool"

    async def open(self, url: str, size: int) -> None:
        import asyncpg

        self.pool: Any = await asyncpg.create_pool(url, min_size=size, max_size=size)

    async def close(self) -> None:
        await self.pool.close()

    async def setup(self) -> None:
        async with self.pool.acquire() as conn:
            await conn.execute(SCHEMA)

    async def assign(self, partition: int) -> int:
        async with self.pool.acquire() as conn, conn.transaction():
            offset: int = await conn.fetchval(SELECT_SQL.format("$1"), partition)
            await conn.execute(UPDATE_SQL.format("$1", "$2"), offset + 1, partition)
            return offset

    async def insert_many(self, rows: list[Row]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(INSERT_SQL.format("$1", "$2", "$3", "$4", "$5"), rows)

    async def copy(self, rows: list[Row]) -> None:
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.copy_records_to_table("bench_index", records=rows, columns=INDEX_COLUMNS)


async def _median_ms(repeats: int, make: Callable[[int], Awaitable[None]]) -> float:
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        await make(i)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def _rows(round_: int, base: int) -> list[Row]:
    return [(round_, base + i, f"intake/{round_:08d}.obj", i * 1100, 1100) for i in range(1000)]


async def measure(driver: Driver, url: str, args: argparse.Namespace) -> Figures:
    await driver.open(url, args.clients)
    try:
        await driver.setup()
        for _ in range(200):  # warm up: connections, prepared statements
            await driver.assign(0)
        latencies = []
        for _ in range(args.transactions):
            start = time.perf_counter()
            await driver.assign(1)
            latencies.append(time.perf_counter() - start)
        latencies.sort()
        p50 = latencies[len(latencies) // 2] * 1000
        p99 = latencies[int(len(latencies) * 0.99)] * 1000

        stop_at = time.perf_counter() + args.seconds
        counts = [0] * args.clients

        async def client(index: int) -> None:
            while time.perf_counter() < stop_at:
                await driver.assign(16 + index)
                counts[index] += 1

        start, cpu_start = time.perf_counter(), time.process_time()
        await asyncio.gather(*(client(i) for i in range(args.clients)))
        txn_per_s = sum(counts) / (time.perf_counter() - start)
        cpu_us = (time.process_time() - cpu_start) / sum(counts) * 1e6

        many = await _median_ms(args.repeats, lambda i: driver.insert_many(_rows(i, 0)))
        copy = await _median_ms(args.repeats, lambda i: driver.copy(_rows(i, 1_000_000)))
        return Figures(p50, p99, txn_per_s, cpu_us, many, copy)
    finally:
        await driver.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    header = (
        f"{'fsync':>5}  {'driver':<20} {'txn p50 ms':>10} {'txn p99 ms':>10} "
        f"{'txn/s x' + str(args.clients):>11} {'client CPU us/txn':>17} "
        f"{'executemany 1k ms':>17} {'COPY 1k ms':>10}"
    )
    print(header)
    for durable in (True, False):
        with postgres_server(durable=durable) as server:
            for driver in (Psycopg(), Asyncpg()):
                f = asyncio.run(measure(driver, server.url, args))
                print(
                    f"{'on' if durable else 'off':>5}  {driver.name:<20} {f.p50_ms:10.2f} "
                    f"{f.p99_ms:10.2f} {f.txn_per_s:11.0f} {f.cpu_us:17.0f} "
                    f"{f.executemany_ms:17.1f} "
                    f"{f.copy_ms:10.1f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
