"""Group commit in the core: acknowledged appends per second against fsyncs.

Usage: ``python benchmarks/core_group_commit.py [--producers N] [--appends M] [--dir PATH]``

Runs N concurrent producers, each appending M single-record batches (100-byte values) to one
partition through ``Partition.append``, once per fsync policy, and prints throughput, the number
of fsyncs and how many appends each fsync covered. Point ``--dir`` at the disk to measure (the
default is a temporary directory).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from wharf.core.broker import Broker
from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.storage.record_batch import RecordInput, build_batch


async def run(path: Path, policy: FsyncPolicy, producers: int, appends: int) -> None:
    config = BrokerConfig(fsync=policy, fsync_interval_ms=50)
    async with Broker.open(path, config) as broker:
        await broker.create_topic("bench", 1)
        partition = broker.topics.partition("bench", 0)
        batch = build_batch([RecordInput(None, b"v" * 100)])

        async def producer() -> None:
            for _ in range(appends):
                await partition.append(batch, acks=-1)

        start = time.perf_counter()
        await asyncio.gather(*(producer() for _ in range(producers)))
        elapsed = time.perf_counter() - start
        total = producers * appends
        fsyncs = partition.committer.fsyncs
        per_fsync = f"{total / fsyncs:8.1f}" if fsyncs else "       -"
        print(
            f"{policy.value:>8}  {producers:4d} producers  {total / elapsed:10.0f} appends/s  "
            f"{fsyncs:6d} fsyncs  {per_fsync} appends/fsync"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--producers", type=int, default=64)
    parser.add_argument("--appends", type=int, default=200)
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        for policy in FsyncPolicy:
            for producers in sorted({1, args.producers}):
                target = Path(tmp) / f"{policy.value}-{producers}"
                asyncio.run(run(target, policy, producers, args.appends))


if __name__ == "__main__":
    main()
