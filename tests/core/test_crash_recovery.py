"""A broker process killed with SIGKILL keeps every record and offset commit it acknowledged."""

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from wharf.core.broker import Broker

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from wharf.core.broker import Broker

    async def main(path):
        async with Broker.open(path) as broker:
            await broker.create_topic("t", partitions=2)
            n = 0
            while True:
                partition, offset = await broker.produce("t", b"value-%d" % n, key=b"%d" % n)
                await broker.commit_offsets("g", {("t", partition): offset + 1})
                print(n, partition, offset, flush=True)
                n += 1

    asyncio.run(main(sys.argv[1]))
    """
)


def test_acknowledged_records_survive_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(data)], stdout=subprocess.PIPE, text=True
    )
    acked: list[tuple[int, int, int]] = []
    try:
        assert child.stdout is not None
        for line in child.stdout:
            n, partition, offset = map(int, line.split())
            acked.append((n, partition, offset))
            if len(acked) >= 300:
                break
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
        assert child.stdout is not None
        child.stdout.close()
    assert len(acked) >= 300

    async def check() -> None:
        async with Broker.open(data) as broker:
            last: dict[int, int] = {}
            for n, partition, offset in acked:
                (record,) = await broker.fetch("t", partition, offset, max_records=1)
                assert (record.offset, record.value, record.key) == (
                    offset,
                    b"value-%d" % n,
                    b"%d" % n,
                )
                last[partition] = offset
            committed = broker.committed_offsets("g")
            for partition, offset in last.items():
                assert committed[("t", partition)] >= offset + 1

    asyncio.run(check())
