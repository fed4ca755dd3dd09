"""The produce path of a cluster node: :class:`StreamWriter` takes appends, writes each flush
as one intake object, and commits it in one fenced transaction.

How it works. :meth:`StreamWriter.append` hands validated batches to the node's
:class:`~wharf.cluster.streams.intake.Intake`, which gathers them into flushes. For each flush
the writer lays the batches out by partition (:func:`~wharf.cluster.streams.objects.encode_object`),
PUTs the object at ``intake/<node id>/<flush id>`` (rule 1: object before row), then commits
(:func:`~wharf.cluster.streams.commit.commit_flush`, serial per node, in cut order) and only
then answers the appends (rule 2: row before ack).

A commit whose outcome is unknown (the connection was lost while committing) is run again
with the same flush id, which finds the committed flush or commits it, until
``commit_timeout`` (counted from the cut, for PUT and commit together) runs out; then the
appends get a ``DatabaseError`` with ``outcome_unknown`` (Kafka's ``REQUEST_TIMED_OUT``).
A lost lease is :class:`~wharf.cluster.nodes.LeaseLostError`, nothing committed. A failed or
silent PUT is an :class:`~wharf.cluster.objectstore.ObjectStoreError`; the object, if any, is
an orphan for the sweep.

Hooks: ``on_object(key, data)`` after each committed flush (the read cache learns the object);
``observe(name, seconds)`` with ``streams.put`` (the PUT), ``streams.commit`` (the commit, its
re-runs included) and ``streams.flush`` (from the cut to the answers), failed or not.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from wharf.cluster.catalog import NodeLease
from wharf.cluster.database import Database, DatabaseError
from wharf.cluster.nodes import LeaseLostError
from wharf.cluster.objectstore import ObjectStore, ObjectStoreError
from wharf.cluster.streams.commit import (
    Appended,
    AppendStatus,
    FlushPlan,
    PlannedAppend,
    PlannedBatch,
    commit_flush,
)
from wharf.cluster.streams.intake import Flush, Intake, IntakeLimits, Pending
from wharf.cluster.streams.objects import PartitionRun, encode_object, intake_key
from wharf.errors import StorageError
from wharf.storage.validated import ValidatedBatches

__all__ = ["AppendStatus", "Appended", "StreamWriter", "WriterSettings"]


@dataclass(frozen=True)
class WriterSettings:
    flush_window: float = 0.005
    """Seconds a flush stays open after its first append."""
    flush_max_bytes: int = 4 * 1024 * 1024
    """A flush this large is cut at once."""
    intake_max_bytes: int = 64 * 1024 * 1024
    """Appends wait (back-pressure) while this many bytes are unanswered."""
    commit_timeout: float = 10.0
    """Bound on one flush's PUT and commit together, from its cut."""


@dataclass(frozen=True, slots=True)
class _Uploaded:
    plan: FlushPlan
    data: bytes
    deadline: float


class StreamWriter:
    """One node's writer; see the module docstring."""

    def __init__(
        self,
        db: Database,
        store: ObjectStore,
        node_id: str,
        lease: Callable[[], NodeLease],
        settings: WriterSettings = WriterSettings(),  # noqa: B008 - frozen, shared safely
        observe: Callable[[str, float], None] | None = None,
        on_object: Callable[[str, bytes], None] | None = None,
    ) -> None:
        self._db = db
        self._store = store
        self._node_id = node_id
        self._lease = lease
        self.settings = settings
        self._observe = observe
        self._on_object = on_object
        self.flushes = 0  # committed, for /metrics
        self.flushed_bytes = 0  # of their objects
        self._intake: Intake[Appended] | None = None

    def start(self) -> None:
        limits = IntakeLimits(
            self.settings.flush_window,
            self.settings.flush_max_bytes,
            self.settings.intake_max_bytes,
        )
        self._intake = Intake(limits, self._put, self._commit)

    async def close(self) -> None:
        """Commit what is pending, then stop taking appends."""
        if self._intake is not None:
            await self._intake.close()

    async def append(
        self, topic_id: uuid.UUID, partition: int, batches: ValidatedBatches
    ) -> Appended:
        """Append ``batches`` (validated, stamped) to a partition once they are committed."""
        if self._intake is None:
            raise StorageError("the stream writer is not started")
        return await self._intake.append(topic_id, partition, batches)

    async def _put(self, flush: Flush[Appended]) -> object:
        started = time.monotonic()
        deadline = started + self.settings.commit_timeout
        plan, data = _layout(flush, intake_key(self._node_id, flush.flush_id))
        try:
            async with asyncio.timeout(self.settings.commit_timeout):
                await self._store.put(plan.key, data)
        except TimeoutError as exc:
            raise ObjectStoreError(
                f"PUT of {plan.key} did not finish within "
                f"{self.settings.commit_timeout:g} s (commit_timeout)",
                key=plan.key,
            ) from exc
        finally:
            self._time("streams.put", started)
        return _Uploaded(plan, data, deadline)

    async def _commit(self, flush: Flush[Appended], uploaded: object) -> Sequence[Appended]:
        assert isinstance(uploaded, _Uploaded)
        started = time.monotonic()
        try:
            answers = await self._commit_until_known(uploaded)
        finally:
            self._time("streams.commit", started)
            self._time("streams.flush", uploaded.deadline - self.settings.commit_timeout)
        self.flushes += 1
        self.flushed_bytes += len(uploaded.data)
        if self._on_object is not None:
            self._on_object(uploaded.plan.key, uploaded.data)
        return answers

    async def _commit_until_known(self, uploaded: _Uploaded) -> list[Appended]:
        plan = uploaded.plan
        unknown: DatabaseError | None = None
        while True:
            remaining = uploaded.deadline - time.monotonic()
            if remaining <= 0:
                raise self._expired(plan, unknown)
            lease = self._lease()
            try:
                async with asyncio.timeout(remaining):
                    return await commit_flush(self._db, lease, plan, time_limit=remaining)
            except TimeoutError:
                unknown = DatabaseError(self._db.name, "no answer", outcome_unknown=True)
            except LeaseLostError:
                raise
            except DatabaseError as exc:
                if not exc.outcome_unknown:
                    raise
                unknown = exc

    def _expired(self, plan: FlushPlan, unknown: DatabaseError | None) -> DatabaseError:
        limit = f"{self.settings.commit_timeout:g} s (commit_timeout)"
        if unknown is None:
            return DatabaseError(
                self._db.name,
                f"flush {plan.flush_id} was not committed within {limit}",
                retriable=True,
            )
        return DatabaseError(
            self._db.name,
            f"flush {plan.flush_id}: whether it committed is still unknown after {limit} "
            f"({unknown.reason})",
            outcome_unknown=True,
        )

    def _time(self, name: str, started: float) -> None:
        if self._observe is not None:
            self._observe(name, time.monotonic() - started)


def _layout(flush: Flush[Appended], key: str) -> tuple[FlushPlan, bytes]:
    """The flush's object (partitions sorted, appends in arrival order within each) and the
    plan of its commit (appends in arrival order, each batch placed in the object)."""
    groups: dict[tuple[uuid.UUID, int], list[Pending[Appended]]] = {}
    for pending in flush.appends:
        groups.setdefault((pending.topic_id, pending.partition), []).append(pending)
    order = sorted(groups)
    runs = [
        PartitionRun(
            topic_id,
            partition,
            [p.batches.view for p in groups[(topic_id, partition)]],
            sum(p.batches.records for p in groups[(topic_id, partition)]),
        )
        for topic_id, partition in order
    ]
    data, starts = encode_object(runs)
    placed: dict[int, PlannedAppend] = {}
    for group_key, chunk_starts in zip(order, starts, strict=True):
        for pending, start in zip(groups[group_key], chunk_starts, strict=True):
            batches = pending.batches
            placed[id(pending)] = PlannedAppend(
                pending.topic_id,
                pending.partition,
                [
                    PlannedBatch(header, start + position)
                    for header, position in zip(batches.headers, batches.positions, strict=True)
                ],
                batches.size,
            )
    plan = FlushPlan(
        flush.flush_id, key, len(data), [placed[id(p)] for p in flush.appends]
    )
    return plan, data
