"""Storage engine throughput, each figure beside the raw file I/O it is built on.

1. Append throughput of ``Log.append`` for 100-byte records in batches of 1, 100 and 1000
   records and in ~1 MiB batches, with an fdatasync after every append ("always") and never,
   against ``os.write`` of the same bytes with the same fsync cadence, alternating between the
   two in short slices of the same run; the ratio is ours / raw.
2. Durable single-record appends from many concurrent writers with group commit: asyncio
   writers append on the owner (event-loop) thread, one committer thread runs ``flush()`` in a
   loop, and each writer waits until ``durable_offset`` passes its record. Compared with the
   raw fdatasync rate of the same disk (one 100-byte write + fdatasync per record). A third
   row drives the broker's own ``GroupCommitter`` (core) the same way.
3. Reading a log back in 1 MiB reads, and opening it with and without a recovery point, and
   after a simulated crash (the directory copied while the log is open) of a log whose flushes
   move the recovery point every 1 MiB.

Run: ``.venv/bin/python benchmarks/storage.py [--seconds 3] [--slices 30] [--rounds 3]
[--dir PATH]``
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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from wharf.core.config import FsyncPolicy
from wharf.core.durability import GroupCommitter
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
    clock = time.perf_counter
    start = clock()
    deadline = start + seconds
    while True:
        step()
        n += 1
        if clock() >= deadline:
            break
    return n, clock() - start


def bench_pair(
    base: Path, batch: bytes, records: int, fsync: bool, seconds: float, slices: int
) -> tuple[Rate, Rate]:
    """``Log.append`` against ``os.write`` of the same bytes, alternating in short slices so
    that load from other processes and the kernel's writeback fall on both alike. Returns
    (log rate, raw rate)."""
    shutil.rmtree(base / "pair", ignore_errors=True)
    log = Log.open(base / "pair" / "log", LogConfig(max_batch_bytes=4 * MIB, retention_ms=None))
    fd = os.open(base / "pair" / "raw.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)

    def ours() -> None:
        log.append(batch)
        if fsync:
            log.flush()

    def raw() -> None:
        os.write(fd, batch)
        if fsync:
            os.fdatasync(fd)

    calls = [0, 0]
    spent = [0.0, 0.0]
    for i in range(slices):
        # Each side goes first in every other slice, so neither always runs while the
        # kernel writes back what the other just dirtied.
        order = ((0, ours), (1, raw)) if i % 2 == 0 else ((1, raw), (0, ours))
        for side, step in order:
            n, elapsed = timed_loop(step, seconds / slices)
            calls[side] += n
            spent[side] += elapsed
    log.close()
    os.close(fd)
    shutil.rmtree(base / "pair", ignore_errors=True)
    size = len(batch)
    return (
        Rate(calls[0] * records / spent[0], calls[0] * size / spent[0] / 1e6),
        Rate(calls[1] * records / spent[1], calls[1] * size / spent[1] / 1e6),
    )


def append_table(base: Path, seconds: float, slices: int) -> None:
    value = b"v" * RECORD_BYTES
    shapes = [("1 record", 1), ("100 records", 100), ("1000 records", 1000),
              ("1 MiB", MIB // (RECORD_BYTES + 8))]
    print(f"Append throughput, 100-byte records ({seconds:g} s each side, alternating in "
          f"{slices} slices)")
    print(f"{'batch':<13} {'fsync':<7} {'log rec/s':>12} {'log MB/s':>9} "
          f"{'raw rec/s':>12} {'raw MB/s':>9} {'log/raw':>8}")
    for name, count in shapes:
        batch = build_batch([RecordInput(None, value, (), 0)] * count)
        for fsync in (True, False):
            o, r = bench_pair(base, batch, count, fsync, seconds, slices)
            print(f"{name:<13} {'always' if fsync else 'never':<7} {o.records:>12,.0f} "
                  f"{o.mbytes:>9.1f} {r.records:>12,.0f} {r.mbytes:>9.1f} "
                  f"{o.records / r.records:>7.0%}")


def bench_raw(directory: Path, batch: bytes, fsync: bool, seconds: float) -> float:
    """Writes (+ fdatasync) of ``batch`` per second."""
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
    return n / elapsed


def raw_fdatasync_rate(base: Path, seconds: float) -> float:
    return bench_raw(base / "raw", b"r" * RECORD_BYTES, True, seconds)


async def group_commit_run(
    directory: Path, writers: int, seconds: float, encode: bool
) -> tuple[float, float]:
    """Durable single-record appends/s from ``writers`` coroutines, and records per fsync.

    ``encode``: each append encodes its record (``append_records``, like an AMQP publish);
    otherwise it appends a ready one-record batch (``append``, like a Kafka produce request).
    """
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

    record = [RecordInput(None, value)]
    batch = build_batch(record)

    async def writer() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            info = log.append_records(record) if encode else log.append(batch)
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
    return done / elapsed, done / max(flushes, 1)


async def core_group_commit_run(
    directory: Path, writers: int, seconds: float
) -> tuple[float, float]:
    """The same with the broker's own ``wharf.core.durability.GroupCommitter``."""
    shutil.rmtree(directory, ignore_errors=True)
    log = Log.open(directory, LogConfig(retention_ms=None))
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="committer") as executor:
        committer = GroupCommitter(log, FsyncPolicy.ALWAYS, executor=executor)
        batch = build_batch([RecordInput(None, b"d" * RECORD_BYTES)])
        done = 0
        deadline = time.perf_counter() + seconds

        async def writer() -> None:
            nonlocal done
            while time.perf_counter() < deadline:
                info = log.append(batch)
                await committer.wait_durable(info.last_offset + 1)
                done += 1

        start = time.perf_counter()
        await asyncio.gather(*(writer() for _ in range(writers)))
        elapsed = time.perf_counter() - start
        await committer.close()
    log.close()
    shutil.rmtree(directory, ignore_errors=True)
    return done / elapsed, done / max(committer.fsyncs, 1)


def group_commit_table(base: Path, seconds: float, rounds: int) -> None:
    print()
    print("Durable single-record appends, group commit, 64 concurrent asyncio writers, "
          f"{seconds:g} s runs (median of {rounds} rounds, raw measured between runs)")
    raw: list[float] = []
    labels = ["append(1-record batch)", "append_records(1 record)",
              "core GroupCommitter + append"]
    results: dict[str, list[tuple[float, float]]] = {label: [] for label in labels}
    for _ in range(rounds):
        for label in labels:
            if label.startswith("core"):
                run = core_group_commit_run(base / "gc", 64, seconds)
            else:
                run = group_commit_run(base / "gc", 64, seconds, label.startswith("append_rec"))
            results[label].append(asyncio.run(run))
            raw.append(raw_fdatasync_rate(base, seconds / 2))
    raw_rate = statistics.median(raw)
    for label in labels:
        rate = statistics.median(r for r, _ in results[label])
        per_fsync = statistics.median(p for _, p in results[label])
        print(f"{label:<34} {rate:>10,.0f} rec/s  {rate / raw_rate:>5.1f}x raw  "
              f"({per_fsync:,.0f} records per fsync)")
    print(f"{'raw 100-byte write + fdatasync':<34} {raw_rate:>10,.0f} rec/s")


def read_and_recovery_table(base: Path) -> None:
    """Reading back and reopening a 100,000-batch log of single 100-byte records."""
    print()
    print("Reading and recovery, 100,000 single-record batches (one run)")
    directory = base / "read"
    shutil.rmtree(directory, ignore_errors=True)
    log = Log.open(directory, LogConfig(retention_ms=None))
    batch = build_batch([RecordInput(None, b"r" * RECORD_BYTES, (), 0)])
    for _ in range(100_000):
        log.append(batch)
    start = time.perf_counter()
    offset = total = 0
    while offset < log.next_offset:
        data = log.read(offset, MIB)
        total += len(data)
        offset += len(data) // len(batch)
    elapsed = time.perf_counter() - start
    print(f"{'read(offset, 1 MiB) to the end':<36} {total / elapsed / 1e6:>8.0f} MB/s  "
          f"{total / len(batch) / elapsed:>12,.0f} batches/s")
    log.close()
    start = time.perf_counter()
    Log.open(directory).close()
    print(f"{'open after a clean close':<36} {(time.perf_counter() - start) * 1e3:>8.0f} ms")
    (directory / "recovery-point").unlink()
    start = time.perf_counter()
    Log.open(directory).close()
    elapsed = time.perf_counter() - start
    print(f"{'open verifying every batch (CRC)':<36} {elapsed * 1e3:>8.0f} ms")
    shutil.rmtree(directory, ignore_errors=True)

    # The same log flushed every 1,000 appends, its recovery point moving after each MiB
    # flushed, then "killed": the directory is copied while the log is still open.
    live = Log.open(base / "live", LogConfig(
        retention_ms=None, recovery_point_interval_bytes=MIB, recovery_point_interval_ms=None
    ))
    for i in range(100_000):
        live.append(batch)
        if i % 1000 == 999:
            live.flush()
    shutil.copytree(live.path, directory)
    live.close()
    start = time.perf_counter()
    crashed = Log.open(directory)
    elapsed = time.perf_counter() - start
    verified = crashed.recovery_verified_bytes
    crashed.close()
    print(f"{'open after a crash (1 MiB checkpoints)':<36} {elapsed * 1e3:>8.0f} ms  "
          f"{verified / 1e6:>8.2f} MB CRC-checked")
    shutil.rmtree(directory, ignore_errors=True)
    shutil.rmtree(base / "live", ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per side and case")
    parser.add_argument("--slices", type=int, default=30, help="alternations per case")
    parser.add_argument("--rounds", type=int, default=3, help="group-commit rounds")
    parser.add_argument("--dir", type=Path, default=None, help="scratch directory (a disk)")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="wharf-bench-", dir=args.dir))
    try:
        append_table(base, args.seconds, args.slices)
        group_commit_table(base, args.seconds, args.rounds)
        read_and_recovery_table(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
