"""The background jobs of a cluster node's streams: compaction, retention, garbage collection
and the orphan sweep (docs/cluster.md, "Compaction, retention, garbage collection").

How it works. Every node runs one :class:`ClusterMaintenance`, opened and closed with its
cluster streams (:mod:`wharf.core.streams.cluster_streams`). Each job is a
:class:`~wharf.core.timer_chain.TimerChain` on the broker's clock (retention every
``retention_check_interval_ms``, the others every ``cluster_jobs.interval_ms``): a run first
takes or keeps the job's lease (:func:`~wharf.cluster.streams.leases.acquire_job_lease`), so
one node at a time does each job, and a node whose lease lapsed or was replaced loses the job to
whoever asks next; then it does one round, bounded by ``job_timeout_ms``, fenced on both leases
in every transaction. Failures are logged and the job runs again at its next tick. What each
job did on this node is counted in ``counts`` (rounds, items, failures), which ``/metrics``
exports.

Retention reads each topic's ``retention.ms`` and ``retention.bytes`` from the node's cached
catalogue (:class:`~wharf.core.streams.cluster_topics.ClusterTopicManager`) and also clears the
index rows of deleted topics.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING

from wharf.cluster.catalog import NodeLease
from wharf.cluster.nodes import LeaseLostError
from wharf.cluster.streams import compactor, gc, retention
from wharf.cluster.streams.leases import JOBS, JobName, acquire_job_lease
from wharf.core.clock import Clock
from wharf.core.config import BrokerConfig
from wharf.core.streams.view import JobCounts
from wharf.core.timer_chain import TimerChain
from wharf.errors import StorageError

if TYPE_CHECKING:
    from wharf.core.cluster_node import ClusterNode
    from wharf.core.streams.cluster_topics import ClusterTopicManager

__all__ = ["ClusterMaintenance"]

log = logging.getLogger(__name__)


class ClusterMaintenance:
    """One node's runner of the streams' background jobs; see the module docstring.
    ``counts[job]`` says what each job did on this node; pass ``counts`` to have them kept in
    a mapping of the caller's (the topics' ``job_counters``)."""

    def __init__(
        self,
        node: ClusterNode,
        topics: ClusterTopicManager,
        config: BrokerConfig,
        clock: Clock,
        counts: MutableMapping[str, JobCounts] | None = None,
    ) -> None:
        self._node = node
        self._topics = topics
        self._config = config
        self._clock = clock
        jobs = config.cluster_jobs
        self.compaction = compactor.CompactionSettings(
            compact_after=jobs.compact_after_ms / 1000,
            min_batches=jobs.compact_min_batches,
            max_bytes_per_second=jobs.compact_max_bytes_per_second or None,
            round_seconds=jobs.job_timeout_ms / 2000,
        )
        self.gc = gc.GcSettings(
            gc_grace=jobs.gc_grace_ms / 1000, orphan_grace=jobs.orphan_grace_ms / 1000
        )
        self._sweep_cursor = gc.SweepCursor()
        self.counts: MutableMapping[str, JobCounts] = {} if counts is None else counts
        for job in JOBS:
            self.counts[job] = JobCounts()
        rounds: dict[JobName, Callable[[NodeLease], Awaitable[int]]] = {
            "compactor": self._compact,
            "retention": self._retention,
            "gc": self._collect,
            "orphans": self._sweep,
        }
        self._rounds = rounds
        self._chains = [
            TimerChain(clock, self._runner(job), self._delay(job), f"cluster {job}")
            for job in JOBS
        ]

    def start(self) -> None:
        for chain in self._chains:
            chain.start()

    async def close(self) -> None:
        for chain in self._chains:
            await chain.close()

    async def run(self, job: JobName) -> bool:
        """One run of ``job`` now: False when another node holds its lease. Errors propagate
        (the timers' runs log them)."""
        lease = self._node.lease()
        if not await acquire_job_lease(self._node.db, lease, job):
            return False
        async with asyncio.timeout(self._config.cluster_jobs.job_timeout_ms / 1000):
            done = await self._rounds[job](lease)
        self.counts[job].runs += 1
        self.counts[job].items += done
        return True

    # ------------------------------------------------------------------ the jobs

    async def _compact(self, lease: NodeLease) -> int:
        return await compactor.compact(self._node.db, self._node.store, lease, self.compaction)

    async def _retention(self, lease: NodeLease) -> int:
        db = self._node.db
        removed = await retention.drop_deleted_topics(db, lease)
        now_ms = self._clock.now_ms()
        for topic in self._topics.list():
            config = topic.config
            if config.retention_ms is None and config.retention_bytes is None:
                continue
            for partition in topic.partitions:
                removed += await retention.enforce_retention(
                    db,
                    lease,
                    topic.topic_id,
                    partition.index,
                    retention_ms=config.retention_ms,
                    retention_bytes=config.retention_bytes,
                    now_ms=now_ms,
                )
        return removed

    async def _collect(self, lease: NodeLease) -> int:
        return len(await gc.collect_garbage(self._node.db, self._node.store, lease, self.gc))

    async def _sweep(self, lease: NodeLease) -> int:
        swept = await gc.sweep_orphans(
            self._node.db, self._node.store, lease, self.gc, self._sweep_cursor
        )
        return len(swept)

    # ------------------------------------------------------------------ scheduling

    def _runner(self, job: JobName) -> Callable[[], Awaitable[None]]:
        async def run() -> None:
            try:
                await self.run(job)
            except LeaseLostError as exc:
                log.info("cluster %s: not run, the lease is gone: %s", job, exc)
            except (StorageError, TimeoutError) as exc:
                self.counts[job].failures += 1
                log.warning("cluster %s failed (retrying at the next interval): %s", job, exc)

        return run

    def _delay(self, job: JobName) -> Callable[[], float]:
        def delay() -> float:
            if job == "retention":
                return max(self._config.retention_check_interval_ms, 1) / 1000
            return max(self._config.cluster_jobs.interval_ms, 1) / 1000

        return delay
