"""Storage engine throughput, each figure beside the raw file I/O it is built on.

1. Append throughput of ``Log.append`` for 100-byte records in batches of 1, 100 and 1000
   records and in ~1 MiB batches, with an fdatasync after every append ("always") and never,
   against ``os.write`` of the same bytes with the same fsync cadence, measured alternately in
   the same run; the ratio is ours / raw.
2. Durable single-record appends from many concurrent writers with group commit: asyncio
   writers append on the owner (event-loop) thread, one committer thread runs ``flush()`` in a
   loop, and each writer waits until ``durable_offset`` passes its record. Compared with the
   raw fdatasync rate of the same disk (one 100-byte write + fdatasync per record).

Run: ``.venv/bin/python benchmarks/storage.py [--seconds 1] [--rounds 5] [--dir PATH]``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wharf.storage.log import Log, LogConfig
from wharf.storage.record_batch import RecordInput, build_batch

RECORD_BYTES = 100
MIB = 1 << 20


@dataclass
class Rate:
    records: float  # per second
    mbytes: float  # MB (10^6 bytes) per second


def timed_loop(step: Callable[[], None], seconds: float) -> tuple[int, float]:
    """Call ``step`` until ``seconds`` have passed; returns (calls, elapsed)."""
    n = 0
    start = time.perf_counter()
    deadline = start + seconds
    while True:
        step()
        n += 1
        if n % 8 == 0 and time.perf_counter() >= deadline:
            break
    return n, time.perf_counter() - start


def bench_log(directory: Path, batch: bytes, records: int, fsync: bool, seconds: float) -> Rate:
    shutil.rmtree(directory, ignore_errors=True)
    log = Log.open(directory, LogConfig(max_batch_bytes=4 * MIB, retention_ms=None))

    def step() -> None:
        log.append(batch)
        if fsync:
            log.flush()

    n, elapsed = timed_loop(step, seconds)
    log.close()
    shutil.rmtree(directory, ignore_errors=True)
    return Rate(n * records / elapsed, n * len(batch) / elapsed / 1e6)


def bench_raw(directory: Path, batch: bytes, records: int, fsync: bool, seconds: float) -> Rate:
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    fd = os.open(directory / "raw.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def step() -> None:
        os.write(fd, batch)
        if fsync:
            os.fdatasync(fd)

    n, elapsed = timed_loop(step, seconds)
    os.close(fd)
    shutil.rmtree(directory, ignore_errors=True)
    return Rate(n * records / elapsed, n * len(batch) / elapsed / 1e6)


def median_rate(rates: list[Rate]) -> Rate:
    return Rate(
        statistics.median(r.records for r in rates), statistics.median(r.mbytes for r in rates)
    )


def append_table(base: Path, seconds: float, rounds: int) -> None:
    value = b"v" * RECORD_BYTES
    shapes = [("1 record", 1), ("100 records", 100), ("1000 records", 1000),
              ("1 MiB", MIB // (RECORD_BYTES + 8))]
    print(f"Append throughput, 100-byte records: medians of {rounds} alternating rounds; "
          "log/raw is the median of the per-round ratios")
    print(f"{'batch':<13} {'fsync':<7} {'log rec/s':>12} {'log MB/s':>9} "
          f"{'raw rec/s':>12} {'raw MB/s':>9} {'log/raw':>8}")
    for name, count in shapes:
        batch = build_batch([RecordInput(None, value, (), 0)] * count)
        for fsync in (True, False):
            ours: list[Rate] = []
            raw: list[Rate] = []
            for _ in range(rounds):
                ours.append(bench_log(base / "log", batch, count, fsync, seconds))
                raw.append(bench_raw(base / "raw", batch, count, fsync, seconds))
            o, r = median_rate(ours), median_rate(raw)
            ratios = [a.records / b.records for a, b in zip(ours, raw, strict=True)]
            paired = statistics.median(ratios)
            print(f"{name:<13} {'always' if fsync else 'never':<7} {o.records:>12,.0f} "
                  f"{o.mbytes:>9.1f} {r.records:>12,.0f} {r.mbytes:>9.1f} {paired:>7.0%}")


def raw_fdatasync_rate(base: Path, seconds: float) -> float:
    return bench_raw(base / "raw", b"r" * RECORD_BYTES, 1, True, seconds).records


async def group_commit_run(directory: Path, writers: int, seconds: float) -> tuple[float, int]:
    """Durable single-record appends/s from ``writers`` coroutines, and the fsync count."""
    shutil.rmtree(directory, ignore_errors=True)
    log = Log.open(directory, LogConfig(retention_ms=None))
    loop = asyncio.get_running_loop()
    waiters: list[tuple[int, asyncio.Future[None]]] = []
    wake = threading.Event()
    stop = threading.Event()
    flushes = 0

    def release(durable: int) -> None:
        keep = []
        for end, fut in waiters:
            if end <= durable:
                if not fut.done():
                    fut.set_result(None)
            else:
                keep.append((end, fut))
        waiters[:] = keep

    def committer() -> None:
        nonlocal flushes
        while not stop.is_set():
            if not wake.wait(0.05):
                continue
            wake.clear()
            durable = log.flush()
            flushes += 1
            loop.call_soon_threadsafe(release, durable)

    thread = threading.Thread(target=committer, name="committer")
    thread.start()
    done = 0
    deadline = time.perf_counter() + seconds
    value = b"d" * RECORD_BYTES

    async def writer() -> None:
        nonlocal done
        record = [RecordInput(None, value)]
        while time.perf_counter() < deadline:
            info = log.append_records(record)
            if log.durable_offset <= info.last_offset:
                fut = loop.create_future()
                waiters.append((info.last_offset + 1, fut))
                wake.set()
                await fut
            done += 1

    start = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    elapsed = time.perf_counter() - start
    stop.set()
    wake.set()
    await loop.run_in_executor(None, thread.join)
    log.close()
    shutil.rmtree(directory, ignore_errors=True)
    return done / elapsed, flushes


def group_commit_table(base: Path, seconds: float, rounds: int) -> None:
    print()
    print("Durable single-record appends, group commit, 64 concurrent asyncio writers "
          f"(median of {rounds} rounds)")
    rates: list[float] = []
    fsyncs: list[int] = []
    raw: list[float] = []
    for _ in range(rounds):
        rate, flushes = asyncio.run(group_commit_run(base / "gc", 64, seconds))
        rates.append(rate)
        fsyncs.append(flushes)
        raw.append(raw_fdatasync_rate(base, seconds))
    rate = statistics.median(rates)
    raw_rate = statistics.median(raw)
    per_fsync = rate * seconds / max(statistics.median(fsyncs), 1)
    print(f"{'group-committed durable appends':<36} {rate:>10,.0f} rec/s "
          f"({per_fsync:,.0f} records per fsync)")
    print(f"{'raw write+fdatasync per record':<36} {raw_rate:>10,.0f} rec/s")
    print(f"{'ratio':<36} {rate / raw_rate:>10.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory (a disk)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="wharf-bench-", dir=args.dir))
    try:
        append_table(base, args.seconds, args.rounds)
        group_commit_table(base, args.seconds, args.rounds)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
