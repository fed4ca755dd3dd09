"""One flush's commit: a single fenced transaction that makes its batches part of their
partitions (docs/cluster.md, "The streams commit path", steps 1-7).

How it works. :func:`commit_flush` runs, in one transaction (re-run on serialization failures
and deadlocks by :meth:`Database.run <wharf.cluster.database.Database.run>`):

1. ``INSERT`` the object's ``stream_objects`` row, which carries the flush id: the flush's
   idempotency record. ``ON CONFLICT DO NOTHING`` waits for a transaction still inserting the
   same key and then sees its outcome, so a re-run after a commit whose outcome was unknown
   either goes ahead (nothing committed) or finds the row. A ``live`` row means this flush has
   committed: its answers are read back (:func:`_read_back`). A ``deleting`` row means the
   orphan sweep claimed the key: the flush fails.
2. Fence: the node's lease, live by the database's clock and share-locked
   (:func:`~wharf.cluster.catalog.check_lease`); :class:`~wharf.cluster.nodes.LeaseLostError`
   otherwise, which rolls everything back.
3. The flush's partitions' rows, ``FOR UPDATE``, sorted by (topic id, partition): two nodes'
   flushes lock in one order and never deadlock. A partition without a row, or of a deleted
   topic, answers ``UNKNOWN_PARTITION`` for its appends only.
4. Idempotent producers: their ``stream_producers`` rows, locked, are checked batch by batch in
   arrival order (:class:`_Producers`): an older epoch is refused, a batch equal to one of the
   last five recorded is a duplicate answered with the offsets recorded for it, a gap in the
   sequence is refused; what is accepted moves the state on.
5. Offsets: each accepted batch takes the partition's next offset; the index rows go into
   ``stream_batches`` in one ``INSERT ... SELECT FROM unnest(...)``, the partitions' next
   offsets and byte counts move, and the object's reference count is set.
6. ``pg_notify('wharf_streams', ...)``: ``<topic id hex>:<partition>:<next offset>`` for each
   partition that moved, space-separated, or ``*`` (refresh everything) when that exceeds
   :data:`NOTIFY_LIMIT` bytes. PostgreSQL delivers it only if the transaction commits.
7. Commit. The answers are returned in the order of the appends.

Two round trips: ``BEGIN`` with the reads and locks of steps 1-4, sent together
(``lazy_begin`` and ``Transaction.fetch_each``); the writes of steps 5-6, one statement
(:data:`_WRITE`), with the ``COMMIT`` (a pipeline).

Batches are indexed as the producer sent them: the stored bytes keep the producer's base
offset; the index row holds the assigned one.
"""

from __future__ import annotations

import enum
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, LiteralString

from wharf.cluster.catalog import LEASE_CHECK, NodeLease, require_lease
from wharf.cluster.database import Database, DatabaseError, Transaction
from wharf.storage.record_batch import BatchHeader

__all__ = [
    "NOTIFY_CHANNEL",
    "NOTIFY_LIMIT",
    "AppendStatus",
    "Appended",
    "FlushPlan",
    "PlannedAppend",
    "PlannedBatch",
    "commit_flush",
    "notify_payload",
]

NOTIFY_CHANNEL = "wharf_streams"
NOTIFY_LIMIT = 7_900
NO_PRODUCER_ID = -1
BATCHES_KEPT = 5
MAX_SEQUENCE = 2**31 - 1
_RETRIES = 5


class AppendStatus(enum.Enum):
    APPENDED = "appended"
    DUPLICATE = "duplicate"
    """A retry of a batch already committed: answered with the offsets recorded for it."""
    DUPLICATE_SEQUENCE = "duplicate_sequence"
    """A retried batch sent together with new ones in one append (Kafka's
    ``DUPLICATE_SEQUENCE_NUMBER``): nothing written."""
    OUT_OF_ORDER_SEQUENCE = "out_of_order_sequence"
    INVALID_PRODUCER_EPOCH = "invalid_producer_epoch"
    UNKNOWN_PARTITION = "unknown_partition"


@dataclass(frozen=True, slots=True)
class Appended:
    """The answer to one append; the offsets are -1 when nothing was appended."""

    status: AppendStatus
    base_offset: int = -1
    last_offset: int = -1
    log_start_offset: int = -1


@dataclass(frozen=True, slots=True)
class PlannedBatch:
    header: BatchHeader
    byte_start: int
    """Where the batch starts in the flush's object."""


@dataclass(frozen=True, slots=True)
class PlannedAppend:
    topic_id: uuid.UUID
    partition: int
    batches: Sequence[PlannedBatch]
    size: int


@dataclass(frozen=True, slots=True)
class FlushPlan:
    """What one flush commits: its id, its object and its appends in arrival order."""

    flush_id: uuid.UUID
    key: str
    size: int
    appends: Sequence[PlannedAppend]


def notify_payload(positions: dict[tuple[uuid.UUID, int], int]) -> str:
    """The ``wharf_streams`` payload for partitions' new next offsets (sorted, so that it is
    stable), or ``*`` when it would exceed :data:`NOTIFY_LIMIT` bytes."""
    payload = " ".join(
        f"{topic_id.hex}:{partition}:{next_offset}"
        for (topic_id, partition), next_offset in sorted(positions.items())
    )
    return "*" if len(payload) > NOTIFY_LIMIT else payload


async def commit_flush(
    db: Database, lease: NodeLease, plan: FlushPlan, *, time_limit: float | None = None
) -> list[Appended]:
    """Commit ``plan`` (see the module docstring); one :class:`Appended` per append, in order.

    Raises :class:`~wharf.cluster.nodes.LeaseLostError` when the fence fails (nothing
    committed) and :class:`~wharf.cluster.database.DatabaseError` otherwise; one with
    ``outcome_unknown`` may be answered by running this again with the same plan."""

    async def body(tx: Transaction) -> list[Appended]:
        return await _commit(tx, db.name, lease, plan)

    return await db.run(
        body, "streams.commit", retries=_RETRIES, time_limit=time_limit, lazy_begin=True
    )


@dataclass(slots=True)
class _Partition:
    next_offset: int
    log_start_offset: int
    moved: bool = False
    bytes: int = 0


@dataclass(slots=True)
class _ProducerState:
    epoch: int
    last_sequence: int
    recent: list[list[int]] = field(default_factory=list)
    """Up to five ``[first sequence, last sequence, base offset, last offset]``."""
    changed: bool = False


_Key = tuple[uuid.UUID, int]


async def _commit(
    tx: Transaction, database: str, lease: NodeLease, plan: FlushPlan
) -> list[Appended]:
    keys = _partition_keys(plan)
    producer_keys = _producer_keys(plan)
    # the reads in one round trip, in the order that locks take: the object, the lease, the
    # partitions, the producers
    inserted, held, partition_rows, *producer_rows = await tx.fetch_each([
        (
            "INSERT INTO stream_objects (key, kind, flush_id, size, node_id, node_epoch,"
            "                            created_at, refs, state)"
            " VALUES (%s, 'intake', %s, %s, %s, %s, clock_timestamp(), 0, 'live')"
            " ON CONFLICT DO NOTHING RETURNING 1",
            (plan.key, plan.flush_id, plan.size, lease.node_id, lease.epoch),
        ),
        (LEASE_CHECK, (lease.node_id, lease.epoch)),
        (_LOCK_PARTITIONS, ([k[0] for k in keys], [k[1] for k in keys])),
        *([(_PRODUCERS + " FOR UPDATE OF s", _producer_params(producer_keys))]
          if producer_keys else []),
    ])  # fmt: skip
    if not inserted:  # a flush committed before (its first commit's outcome was unknown)
        return await _read_back(tx, database, plan)
    require_lease(held, lease, database)
    partitions = {(r[0], int(r[1])): _Partition(int(r[2]), int(r[3])) for r in partition_rows}
    producers = _Producers.of_rows(producer_rows[0] if producer_rows else [])
    answers: list[Appended] = []
    rows: list[tuple[Any, ...]] = []
    for append in plan.appends:
        partition = partitions.get((append.topic_id, append.partition))
        if partition is None:
            answers.append(Appended(AppendStatus.UNKNOWN_PARTITION))
            continue
        verdict = producers.check(append)
        if verdict is not None:
            answers.append(_with_log_start(verdict, partition))
            continue
        base = partition.next_offset
        for batch in append.batches:
            header = batch.header
            offset = partition.next_offset
            partition.next_offset += header.last_offset_delta + 1
            producers.record(append.topic_id, append.partition, header, offset)
            rows.append(_index_row(plan.key, append, batch, offset))
        partition.moved = True
        partition.bytes += append.size
        answers.append(
            Appended(
                AppendStatus.APPENDED, base, partition.next_offset - 1, partition.log_start_offset
            )
        )
    await _write(tx, plan, partitions, producers, rows)
    return answers


def _with_log_start(answer: Appended, partition: _Partition) -> Appended:
    if answer.status is AppendStatus.DUPLICATE:
        return Appended(
            answer.status, answer.base_offset, answer.last_offset, partition.log_start_offset
        )
    return answer


def _index_row(
    key: str, append: PlannedAppend, batch: PlannedBatch, offset: int
) -> tuple[Any, ...]:
    h = batch.header
    return (
        append.topic_id,
        append.partition,
        offset,
        offset + h.last_offset_delta,
        key,
        batch.byte_start,
        h.size,
        h.records_count,
        h.base_timestamp,
        h.max_timestamp,
        h.producer_id,
        h.producer_epoch,
        h.base_sequence,
        h.attributes,
    )


_LOCK_PARTITIONS: LiteralString = (
    "SELECT p.topic_id, p.partition, p.next_offset, p.log_start_offset"
    "  FROM stream_partitions p JOIN stream_topics t USING (topic_id)"
    "  JOIN unnest(%s::uuid[], %s::integer[]) AS k(topic_id, partition)"
    "    ON (p.topic_id, p.partition) = (k.topic_id, k.partition)"
    " WHERE t.deleted_at IS NULL"
    " ORDER BY p.topic_id, p.partition"
    "   FOR UPDATE OF p"
)


def _partition_keys(plan: FlushPlan) -> list[_Key]:
    return sorted({(a.topic_id, a.partition) for a in plan.appends})


async def _write(
    tx: Transaction,
    plan: FlushPlan,
    partitions: dict[_Key, _Partition],
    producers: _Producers,
    rows: list[tuple[Any, ...]],
) -> None:
    batches = [list(c) for c in zip(*rows, strict=True)] if rows else [[]] * _BATCH_COLUMNS
    moved = {k: p for k, p in sorted(partitions.items()) if p.moved}
    payload = notify_payload({k: p.next_offset for k, p in moved.items()}) if moved else ""
    params = {
        **{f"b{i}": column for i, column in enumerate(batches)},
        "m_topic": [k[0] for k in moved],
        "m_partition": [k[1] for k in moved],
        "m_next": [p.next_offset for p in moved.values()],
        "m_bytes": [p.bytes for p in moved.values()],
        **producers.changed(),
        "refs": len(rows),
        "key": plan.key,
        "channel": NOTIFY_CHANNEL,
        "payload": payload,
    }
    async with tx.pipeline(commit=True):  # the writes and the commit in one round trip
        await tx.execute(_WRITE, params)


_BATCH_COLUMNS = 14

# Every write of a flush in one statement (its parts see one snapshot, and none reads what
# another writes): the index rows, the partitions' next offsets and byte counts, the changed
# producer states, the object's reference count, and the notification of the partitions
# that moved (none when the payload is empty).
_WRITE: LiteralString = """
    WITH batches AS (
        INSERT INTO stream_batches (topic_id, partition, base_offset, last_offset, object_key,
            byte_start, byte_length, record_count, first_timestamp, max_timestamp,
            producer_id, producer_epoch, base_sequence, attributes)
        SELECT * FROM unnest(%(b0)s::uuid[], %(b1)s::integer[], %(b2)s::bigint[],
            %(b3)s::bigint[], %(b4)s::text[], %(b5)s::bigint[], %(b6)s::integer[],
            %(b7)s::integer[], %(b8)s::bigint[], %(b9)s::bigint[], %(b10)s::bigint[],
            %(b11)s::smallint[], %(b12)s::integer[], %(b13)s::smallint[])
    ), partitions AS (
        UPDATE stream_partitions p SET next_offset = m.next_offset, bytes = p.bytes + m.bytes
          FROM unnest(%(m_topic)s::uuid[], %(m_partition)s::integer[], %(m_next)s::bigint[],
                      %(m_bytes)s::bigint[]) AS m(topic_id, partition, next_offset, bytes)
         WHERE (p.topic_id, p.partition) = (m.topic_id, m.partition)
    ), producers AS (
        INSERT INTO stream_producers (producer_id, topic_id, partition, producer_epoch,
                                      last_sequence, recent, updated_at)
        SELECT u.producer_id, u.topic_id, u.partition, u.producer_epoch, u.last_sequence,
               u.recent::jsonb, clock_timestamp()
          FROM unnest(%(s_producer)s::bigint[], %(s_topic)s::uuid[], %(s_partition)s::integer[],
                      %(s_epoch)s::smallint[], %(s_sequence)s::integer[], %(s_recent)s::text[])
            AS u(producer_id, topic_id, partition, producer_epoch, last_sequence, recent)
        ON CONFLICT (producer_id, topic_id, partition) DO UPDATE SET
           producer_epoch = EXCLUDED.producer_epoch, last_sequence = EXCLUDED.last_sequence,
           recent = EXCLUDED.recent, updated_at = EXCLUDED.updated_at
    ), object AS (
        UPDATE stream_objects SET refs = %(refs)s,
               unreferenced_since = CASE WHEN %(refs)s = 0 THEN clock_timestamp() END
         WHERE key = %(key)s
    )
    SELECT pg_notify(%(channel)s, %(payload)s) WHERE %(payload)s <> ''
"""


async def _read_back(tx: Transaction, database: str, plan: FlushPlan) -> list[Appended]:
    """The answers of a flush that committed earlier: appends with index rows in its object
    were appended at those offsets; the others were not written then, and are checked again
    (read only) to say why: an unknown partition, a duplicate (with its recorded offsets), or
    a producer the state refuses."""
    row = await tx.fetchone(
        "SELECT state, flush_id FROM stream_objects WHERE key = %s", (plan.key,)
    )
    if row is None or row[0] != "live" or row[1] != plan.flush_id:
        # the orphan sweep's claim carries no flush id: the state says it was one
        reason = (
            "was claimed for deletion before this flush committed"
            if row is not None and row[0] == "deleting"
            else "is held by another flush"
        )
        raise DatabaseError(database, f"flush {plan.flush_id}: object {plan.key} {reason}")
    indexed = {
        (r[0], int(r[1]), int(r[2])): (int(r[3]), int(r[4]))
        for r in await tx.fetchall(
            "SELECT topic_id, partition, byte_start, base_offset, last_offset"
            "  FROM stream_batches WHERE object_key = %s",
            (plan.key,),
        )
    }
    keys = sorted({(a.topic_id, a.partition) for a in plan.appends})
    starts = {
        (r[0], int(r[1])): _Partition(int(r[2]), int(r[3]))
        for r in await tx.fetchall(
            "SELECT p.topic_id, p.partition, p.next_offset, p.log_start_offset"
            "  FROM stream_partitions p JOIN stream_topics t USING (topic_id)"
            "  JOIN unnest(%s::uuid[], %s::integer[]) AS k(topic_id, partition)"
            "    ON (p.topic_id, p.partition) = (k.topic_id, k.partition)"
            " WHERE t.deleted_at IS NULL",
            ([k[0] for k in keys], [k[1] for k in keys]),
        )
    }
    producers = await _Producers.load(tx, plan)
    answers = []
    for append in plan.appends:
        partition = starts.get((append.topic_id, append.partition))
        first = indexed.get((append.topic_id, append.partition, append.batches[0].byte_start))
        last = indexed.get((append.topic_id, append.partition, append.batches[-1].byte_start))
        if first is not None and last is not None:
            log_start = -1 if partition is None else partition.log_start_offset
            answers.append(Appended(AppendStatus.APPENDED, first[0], last[1], log_start))
        elif partition is None:
            answers.append(Appended(AppendStatus.UNKNOWN_PARTITION))
        else:
            verdict = producers.check(append)
            if verdict is None:  # refused then, in sequence now: only a gap could refuse it
                verdict = Appended(AppendStatus.OUT_OF_ORDER_SEQUENCE)
            answers.append(_with_log_start(verdict, partition))
    return answers


def _last_sequence(header: BatchHeader) -> int:
    return (header.base_sequence + header.last_offset_delta) % (MAX_SEQUENCE + 1)


def _follows(last: int, first: int) -> bool:
    return first == last + 1 or (first == 0 and last == MAX_SEQUENCE)


_PRODUCERS: LiteralString = (
    "SELECT s.producer_id, s.topic_id, s.partition, s.producer_epoch,"
    "       s.last_sequence, s.recent"
    "  FROM stream_producers s"
    "  JOIN unnest(%s::bigint[], %s::uuid[], %s::integer[])"
    "    AS k(producer_id, topic_id, partition)"
    "    ON (s.producer_id, s.topic_id, s.partition)"
    "     = (k.producer_id, k.topic_id, k.partition)"
    " ORDER BY s.producer_id, s.topic_id, s.partition"
)
"""The producer states of the keys ``(producer id, topic id, partition)`` passed as three
arrays (see :func:`_producer_params`); the commit adds ``FOR UPDATE OF s``."""


def _producer_keys(plan: FlushPlan) -> list[tuple[int, uuid.UUID, int]]:
    return sorted(
        {
            (b.header.producer_id, a.topic_id, a.partition)
            for a in plan.appends
            for b in a.batches
            if b.header.producer_id != NO_PRODUCER_ID
        }
    )


def _producer_params(keys: Sequence[tuple[int, uuid.UUID, int]]) -> tuple[list[Any], ...]:
    return [k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]


class _Producers:
    """The ``stream_producers`` rows of a flush's idempotent producers, checked and moved on
    in memory, then written back (the rules of the local ``ProducerStateTable``)."""

    def __init__(self, states: dict[tuple[int, uuid.UUID, int], _ProducerState]) -> None:
        self._states = states

    @classmethod
    async def load(cls, tx: Transaction, plan: FlushPlan) -> _Producers:
        """The states, read without locking them."""
        keys = _producer_keys(plan)
        if not keys:
            return cls({})
        return cls.of_rows(await tx.fetchall(_PRODUCERS, _producer_params(keys)))

    @classmethod
    def of_rows(cls, rows: Iterable[Sequence[Any]]) -> _Producers:
        """The states in rows of :data:`_PRODUCERS`."""
        return cls(
            {
                (int(r[0]), r[1], int(r[2])): _ProducerState(
                    int(r[3]), int(r[4]), [list(map(int, e)) for e in r[5]]
                )
                for r in rows
            }
        )

    def check(self, append: PlannedAppend) -> Appended | None:
        """``None`` when the append may be written; otherwise its answer (a duplicate's
        recorded offsets, or the refusal)."""
        seen: dict[int, BatchHeader] = {}
        single = len(append.batches) == 1
        for batch in append.batches:
            header = batch.header
            if header.producer_id == NO_PRODUCER_ID:
                continue
            before = seen.get(header.producer_id)
            seen[header.producer_id] = header
            if before is not None:  # later batches of one append follow the one before
                if header.producer_epoch != before.producer_epoch or not _follows(
                    _last_sequence(before), header.base_sequence
                ):
                    return Appended(AppendStatus.OUT_OF_ORDER_SEQUENCE)
                continue
            verdict = self._check_one(append, header)
            if verdict is not None and verdict.status is AppendStatus.DUPLICATE and not single:
                return Appended(AppendStatus.DUPLICATE_SEQUENCE)
            if verdict is not None:
                return verdict
        return None

    def _check_one(self, append: PlannedAppend, header: BatchHeader) -> Appended | None:
        state = self._states.get((header.producer_id, append.topic_id, append.partition))
        if state is None:
            return None
        if header.producer_epoch < state.epoch:
            return Appended(AppendStatus.INVALID_PRODUCER_EPOCH)
        if header.producer_epoch > state.epoch:
            return None if header.base_sequence == 0 else Appended(
                AppendStatus.OUT_OF_ORDER_SEQUENCE
            )
        last = _last_sequence(header)
        for first_seq, last_seq, base, end in state.recent:
            if first_seq == header.base_sequence and last_seq == last:
                return Appended(AppendStatus.DUPLICATE, base, end)
        if state.recent and not _follows(state.last_sequence, header.base_sequence):
            return Appended(AppendStatus.OUT_OF_ORDER_SEQUENCE)
        return None

    def record(
        self, topic_id: uuid.UUID, partition: int, header: BatchHeader, offset: int
    ) -> None:
        if header.producer_id == NO_PRODUCER_ID or header.is_control:
            return
        key = (header.producer_id, topic_id, partition)
        state = self._states.get(key)
        if state is None or header.producer_epoch > state.epoch:
            state = self._states[key] = _ProducerState(header.producer_epoch, -1)
        last = _last_sequence(header)
        state.recent = [
            *state.recent[-(BATCHES_KEPT - 1) :],
            [header.base_sequence, last, offset, offset + header.last_offset_delta],
        ]
        state.last_sequence = last
        state.changed = True

    def changed(self) -> dict[str, list[Any]]:
        """The changed states, as the ``s_*`` parameters of :data:`_WRITE`."""
        changed = sorted((k, s) for k, s in self._states.items() if s.changed)
        return {
            "s_producer": [k[0] for k, _ in changed],
            "s_topic": [k[1] for k, _ in changed],
            "s_partition": [k[2] for k, _ in changed],
            "s_epoch": [s.epoch for _, s in changed],
            "s_sequence": [s.last_sequence for _, s in changed],
            "s_recent": [json.dumps(s.recent) for _, s in changed],
        }
