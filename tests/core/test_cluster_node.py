"""ClusterNode: the cluster's drivers stay an optional extra (single-node mode never imports
them), and a node reads the broker list again, one read at a time, before refusing a client."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any, cast

from wharf.core.cluster_node import ClusterNode


def test_broker_and_serve_import_no_cluster_driver() -> None:
    code = (
        "import sys, wharf.core.broker, wharf.cli.serve.command\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('psycopg', 'psycopg_pool',"
        " 'obstore')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# -- reading the broker list again before a refusal ----------------------------------------------


class GatedReads:
    """A broker-list read that waits for the test to let it end, counting reads."""

    def __init__(self) -> None:
        self.started = 0
        self.gate = asyncio.Event()

    async def __call__(self) -> None:
        self.started += 1
        await self.gate.wait()
        self.gate.clear()


def node_reading(reads: GatedReads) -> ClusterNode:
    unused = cast(Any, None)  # the engines: read_brokers_now touches none of them
    return ClusterNode("node-1", 1, unused, unused, unused, read_brokers=reads)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_callers_that_arrive_during_a_read_share_the_next_one() -> None:
    reads = GatedReads()
    node = node_reading(reads)
    first = asyncio.create_task(node.read_brokers_now())
    await settle()
    assert reads.started == 1
    late = [asyncio.create_task(node.read_brokers_now()) for _ in range(3)]
    await settle()

    reads.gate.set()  # the read the first caller started ends
    await first
    await settle()
    assert not any(t.done() for t in late)  # it began before they asked: they wait for another
    assert reads.started == 2  # one more read, shared by the three

    reads.gate.set()
    await asyncio.gather(*late)
    assert reads.started == 2


async def test_without_a_reader_the_list_is_kept_as_it_is() -> None:
    node = ClusterNode("node-1", 1, cast(Any, None), cast(Any, None), cast(Any, None))
    await node.read_brokers_now()
    assert node.brokers == []
