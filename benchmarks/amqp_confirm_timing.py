"""Cost of timing confirmed publishes: PublisherConfirms numbering, settling and confirming
publishes with and without a request-latency observer. Prints nanoseconds per publish.

    .venv/bin/python benchmarks/amqp_confirm_timing.py
"""

from __future__ import annotations

import time

from wharf.core.queues.router import PublishResult
from wharf.core.stats import BrokerStats, RequestTimer
from wharf.protocol.amqp.confirms import PublisherConfirms

BATCH = 1000  # publishes per socket read
ROUNDS = 200


def run(observer: RequestTimer | None) -> float:
    confirms = PublisherConfirms(
        1, batch_opened=lambda _: None, ready=lambda _: None, observer=observer
    )
    result = PublishResult(routed=True)  # stored at once, as a transient message is
    started = time.perf_counter()
    for _ in range(ROUNDS):
        for _ in range(BATCH):
            confirms.published(result)
        batch = confirms.take_batch()
        assert batch is not None
        confirms.settle(batch, ())
        confirms.flush()
    elapsed = time.perf_counter() - started
    confirms.close()
    return elapsed / (ROUNDS * BATCH) * 1e9


def main() -> None:
    plain: list[float] = []
    timed: list[float] = []
    for _ in range(15):  # interleaved, best of each: other load on the machine shows less
        plain.append(run(None))
        timed.append(run(BrokerStats().request_timer("amqp")))
    plain_ns, timed_ns = min(plain), min(timed)
    print(f"confirmed publish without timing: {plain_ns:7.0f} ns")
    print(f"confirmed publish with timing:    {timed_ns:7.0f} ns")
    print(f"cost of timing:                   {timed_ns - plain_ns:7.0f} ns per publish")


if __name__ == "__main__":
    main()
