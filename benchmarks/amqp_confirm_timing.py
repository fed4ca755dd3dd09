"""Cost of timing confirmed publishes: PublisherConfirms numbering, waiting for and confirming
publishes with and without a request-latency observer. Prints nanoseconds per publish.

    .venv/bin/python benchmarks/amqp_confirm_timing.py
"""

from __future__ import annotations

import asyncio
import time

from pamqp import base

from wharf.core.stats import BrokerStats, RequestTimer
from wharf.protocol.amqp.confirms import PublisherConfirms

BATCH = 1000  # publishes per event-loop iteration, as from one socket read
ROUNDS = 200


class StoredResult:
    """A publish already stored (what a transient message's result is)."""

    rejected = False

    async def wait_durable(self) -> None:
        return None


async def run(observer: RequestTimer | None) -> float:
    done = asyncio.Event()
    last = 0

    def send(frame: base.Frame) -> None:
        if getattr(frame, "delivery_tag", 0) == last:
            done.set()

    confirms = PublisherConfirms(send, observer)
    result = StoredResult()
    started = time.perf_counter()
    for _ in range(ROUNDS):
        done.clear()
        for _ in range(BATCH):
            confirms.published(result)  # type: ignore[arg-type]
        last += BATCH
        await done.wait()
    elapsed = time.perf_counter() - started
    confirms.close()
    return elapsed / (ROUNDS * BATCH) * 1e9


def main() -> None:
    plain: list[float] = []
    timed: list[float] = []
    for _ in range(15):  # interleaved, best of each: other load on the machine shows less
        plain.append(asyncio.run(run(None)))
        timed.append(asyncio.run(run(BrokerStats().request_timer("amqp"))))
    plain_ns, timed_ns = min(plain), min(timed)
    print(f"confirmed publish without timing: {plain_ns:7.0f} ns")
    print(f"confirmed publish with timing:    {timed_ns:7.0f} ns")
    print(f"cost of timing:                   {timed_ns - plain_ns:7.0f} ns per publish")


if __name__ == "__main__":
    main()
