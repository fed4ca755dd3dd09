"""What one small transaction costs the node and PostgreSQL, by the way it is sent.

Usage: ``python benchmarks/cluster_statement_forms.py [--calls N]``

Starts a throwaway local PostgreSQL (``tests/helpers/postgres_server.py``, fsync off: what is
left is the driver's and the server's CPU), opens one psycopg 3 connection in autocommit, as
the cluster's pools do, and runs N calls of each form one after the other:

- ``select, alone``: one parameterised ``SELECT`` sent alone, its own transaction;
- ``select, pipelined``: ``BEGIN``, a ``SET LOCAL``, the ``SELECT`` and ``COMMIT`` in one
  pipeline (one round trip);
- ``insert, alone``: a one-row ``INSERT`` sent alone;
- ``insert, lazy BEGIN``: ``BEGIN`` and the ``INSERT`` in one pipeline, then ``COMMIT`` (two
  round trips).

For each it prints the wall time per call and the CPU time per call of this process (the
driver's cost on a node) and of the connection's server process (PostgreSQL's).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import psycopg
from peer_nodes import cpu_seconds

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from helpers.postgres_server import postgres_server  # noqa: E402

Form = Callable[[psycopg.AsyncConnection[object]], Awaitable[None]]


async def select_alone(connection: psycopg.AsyncConnection[object]) -> None:
    await (await connection.execute("SELECT %s::int", (1,))).fetchall()


async def select_pipelined(connection: psycopg.AsyncConnection[object]) -> None:
    async with connection.pipeline():
        await connection.execute("BEGIN")
        await connection.execute("SET LOCAL enable_sort = off")
        cursor = await connection.execute("SELECT %s::int", (1,))
        await connection.execute("COMMIT")
    await cursor.fetchall()


async def insert_alone(connection: psycopg.AsyncConnection[object]) -> None:
    await connection.execute("INSERT INTO bench_rows VALUES (%s)", (1,))


async def insert_lazy_begin(connection: psycopg.AsyncConnection[object]) -> None:
    async with connection.pipeline():
        await connection.execute("BEGIN")
        await connection.execute("INSERT INTO bench_rows VALUES (%s)", (1,))
    await connection.execute("COMMIT")


FORMS: tuple[tuple[str, Form], ...] = (
    ("select, alone", select_alone),
    ("select, pipelined", select_pipelined),
    ("insert, alone", insert_alone),
    ("insert, lazy BEGIN", insert_lazy_begin),
)


async def measure(url: str, calls: int) -> None:
    connection = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        row = await (await connection.execute("SELECT pg_backend_pid()")).fetchone()
        assert row is not None
        server_pid = int(row[0])
        await connection.execute("CREATE TABLE bench_rows (n int)")
        print(f"{'form':<20} {'wall us':>8} {'node CPU us':>12} {'PostgreSQL CPU us':>18}")
        for name, form in FORMS:
            for _ in range(200):  # warm: prepared statements, caches
                await form(connection)
            server = cpu_seconds(server_pid)
            wall, cpu = time.perf_counter(), time.process_time()
            for _ in range(calls):
                await form(connection)
            wall = time.perf_counter() - wall
            cpu = time.process_time() - cpu
            server = cpu_seconds(server_pid) - server
            print(
                f"{name:<20} {wall / calls * 1e6:8.0f} {cpu / calls * 1e6:12.0f} "
                f"{server / calls * 1e6:18.0f}",
                flush=True,
            )
    finally:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    with postgres_server() as server:
        asyncio.run(measure(server.url, args.calls))


if __name__ == "__main__":
    main()
