"""State the HTTP handlers share: the broker, the server view and the rate sampler.

How it works: :class:`RateTracker` reads monotonic broker counters (messages published and
delivered, bytes in) once a second through :func:`wharf.http.views.counters.sample_counters` and
keeps the last few minutes of per-second rates in a ring, so the overview reports current rates and
the dashboard can draw a chart as soon as it loads. Nothing is counted on the broker's hot
paths for this: the counters already exist in core and are only read here.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field

from aiohttp import web

from wharf.core.broker import Broker
from wharf.http.routing import Endpoint
from wharf.http.schemas import ListenerInfo, RatePoint
from wharf.http.status import ServerView
from wharf.http.views.counters import Counters, sample_counters

log = logging.getLogger(__name__)

SAMPLE_INTERVAL_S = 1.0
HISTORY_SAMPLES = 300


class RateTracker:
    """Samples broker counters periodically and keeps recent per-second rates."""

    def __init__(self, broker: Broker, interval_s: float = SAMPLE_INTERVAL_S) -> None:
        self._broker = broker
        self._interval_s = interval_s
        self._last: tuple[float, Counters] | None = None
        self.history: deque[RatePoint] = deque(maxlen=HISTORY_SAMPLES)
        # (vhost, queue) -> (publish/s, deliver/s, ack/s) over the last interval, for the queues
        # whose counters moved in it
        self.queue_rates: dict[tuple[str, str], tuple[float, float, float]] = {}

    def sample(self) -> None:
        """Take one sample now (the loop calls this every interval)."""
        now = time.monotonic()
        counters = sample_counters(self._broker)
        if self._last is not None:
            then, before = self._last
            elapsed = max(now - then, 1e-3)
            self.history.append(
                RatePoint(
                    time_ms=time.time_ns() // 1_000_000,
                    publish_per_s=_rate(counters.published - before.published, elapsed),
                    deliver_per_s=_rate(counters.delivered - before.delivered, elapsed),
                    bytes_in_per_s=_rate(counters.bytes_in - before.bytes_in, elapsed),
                    consumer_lag=counters.consumer_lag,
                )
            )
            # only the queues whose counters moved (a missing queue's rates are zero): an idle
            # broker with many queues computes nothing per queue
            rates: dict[tuple[str, str], tuple[float, float, float]] = {}
            earlier = before.queues
            for key, now_counts in counters.queues.items():
                then_counts = earlier.get(key)
                if then_counts is None or then_counts == now_counts:
                    continue
                pub, dlv, ack = now_counts
                pub0, dlv0, ack0 = then_counts
                rates[key] = (
                    _rate(pub - pub0, elapsed),
                    _rate(dlv - dlv0, elapsed),
                    _rate(ack - ack0, elapsed),
                )
            self.queue_rates = rates
        self._last = (now, counters)

    def latest(self) -> RatePoint | None:
        return self.history[-1] if self.history else None

    async def run(self) -> None:
        await self._broker.topics.recovered()  # (every partition's log end is read)
        while True:
            if not self._broker.closed:
                try:
                    self.sample()
                except Exception:  # a sampling failure must not end the charts for good
                    log.exception("sampling broker counters failed")
            await asyncio.sleep(self._interval_s)


def _rate(delta: int, elapsed: float) -> float:
    # Counters drop when a topic or queue is deleted; that is not negative traffic.
    return round(max(delta, 0) / elapsed, 3)


@dataclass
class ApiContext:
    """Everything a handler needs, stored on the aiohttp application."""

    broker: Broker
    server: ServerView | None
    endpoints: list[Endpoint] = field(default_factory=list)
    started_monotonic: float = field(default_factory=time.monotonic)
    rates: RateTracker = field(init=False)

    def __post_init__(self) -> None:
        self.rates = RateTracker(self.broker)


CONTEXT = web.AppKey("wharf.http.context", ApiContext)


def context_of(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


def listener_infos(context: ApiContext) -> list[ListenerInfo]:
    """The server's listeners as the API reports them (empty when embedded without a server)."""
    if context.server is None:
        return []
    return [
        ListenerInfo(name=item.name, host=item.host, port=item.port, ready=item.ready)
        for item in context.server.listeners()
    ]
