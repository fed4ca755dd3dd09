"""Compaction: a partition's batches gathered from many small intake objects into one object of
its own (docs/cluster.md, "Compaction, retention, garbage collection").

How it works. :func:`candidates` finds the partitions with at least ``min_batches`` index rows
in source objects, from two objects or more: intake objects older than ``compact_after``, and
compacted objects smaller than ``small_object_bytes`` (so a slow partition's compacted objects
are merged again as they come, instead of piling up small). For one of them
:func:`plan_compaction` reads those rows (in offset order, up to ``max_object_bytes``), fetches
each source object's range with one ranged GET, checks every batch against its row (length and
offset span), writes the row's base offset into the batch (the 8 bytes before the CRC-covered
part, so the producer's CRC stays valid) and lays the batches out as a one-section object (the
intake layout of :mod:`~wharf.cluster.streams.objects`, so that it too can be understood without
the database) under ``p/<topic id>/<partition>/<first base offset>-<uuid>``.

:func:`apply_compaction` PUTs it (rule 1), then commits one transaction, fenced on the node's
lease and the ``compactor`` job's (:func:`~wharf.cluster.streams.leases.check_job_lease`):
the partition's row ``FOR UPDATE`` (the lock flushes and retention take), then one ``UPDATE``
pointing each index row at the new object, matched on its offset *and* its old object and
position. If fewer rows match than were read, retention or DeleteRecords removed some
meanwhile: the transaction rolls back and the new object, never referenced, is left to the
orphan sweep. Otherwise the new object's row goes in with its reference count and the old
objects' counts fall (:func:`~wharf.cluster.streams.refs.release_refs`). Offsets, bytes and
the high watermark do not move; readers that read the old rows keep reading the old objects,
which the garbage collector keeps for ``gc_grace`` after their last reference went.
"""

from __future__ import annotations

import asyncio
import mmap
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import LiteralString, NamedTuple

from wharf.cluster.catalog import NodeLease
from wharf.cluster.database import Database, Transaction
from wharf.cluster.objectstore import ObjectStore
from wharf.cluster.streams.leases import check_job_lease
from wharf.cluster.streams.objects import Section, encode_footer
from wharf.cluster.streams.refs import release_refs
from wharf.errors import CorruptBatchError
from wharf.storage.record_batch import parse_header, set_base_offset

__all__ = [
    "Compaction",
    "CompactionSettings",
    "apply_compaction",
    "candidates",
    "compact",
    "partition_key",
    "plan_compaction",
]

_RETRIES = 5


READS_IN_FLIGHT = 8
"""Ranged GETs of one compaction's source objects at a time. A slow partition leaves one
small intake object per flush, so a compaction may gather thousands: sent all at once, they
held the object store and the cores for seconds (GETs of 250 ms at the median), and every
node's produce PUTs waited behind them (Kafka's end-to-end p99 at 1,000 msg/s went from
22 to 107 ms)."""

class Pacer:
    """Spreads transfers so that they average at most ``rate`` bytes a second: after each,
    :meth:`took` sleeps until the bytes moved so far fit the rate (no sleep without a rate).

    Compaction is background work whose bytes are the object store's and the cores' as much as
    the node's: unpaced, one round GET and PUT 128 MiB per partition as fast as they went, and
    on a machine that also ran the object store and PostgreSQL, every AMQP and Kafka client of
    every node waited behind it (AMQP end-to-end p99 at 1,000 msg/s 53-79 ms while a round ran,
    6-7 ms without one)."""

    def __init__(self, rate: float | None) -> None:
        self._rate = rate
        self._free_at = 0.0

    async def took(self, size: int) -> None:
        if self._rate is None:
            return
        now = asyncio.get_running_loop().time()
        self._free_at = max(self._free_at, now) + size / self._rate
        await asyncio.sleep(self._free_at - now)


BUILD_SLICE = 1 << 20
"""Bytes of batches checked and copied into a compacted object between two turns of the
event loop: building a 64 MiB object of tens of thousands of batches in one go held the loop
for hundreds of ms, a stall for every client of the node (a thread would not help: copying
and parsing hold the GIL)."""


@dataclass(frozen=True)
class CompactionSettings:
    compact_after: float = 60.0
    """Seconds an intake object must have existed before its batches are compacted."""
    min_batches: int = 8
    """A partition is compacted once it has this many such batches."""
    max_object_bytes: int = 16 * 1024 * 1024
    """Bound on one compacted object (its first batch is taken whatever its size)."""
    small_object_bytes: int = 8 * 1024 * 1024
    """Compacted objects smaller than this are compacted again, with the partition's other
    sources, so that a slow partition does not end up as many small objects."""
    partitions_per_round: int = 100
    max_bytes_per_second: float | None = 32 * 1024 * 1024
    """Bound on the compactor's object-store traffic (its ranged GETs and its PUTs), per
    node; ``None``: none. A round stops taking partitions once it has run ``round_seconds``."""
    round_seconds: float = 60.0


class _Row(NamedTuple):
    base_offset: int
    last_offset: int
    object_key: str
    byte_start: int
    byte_length: int
    record_count: int


@dataclass(frozen=True)
class Compaction:
    """A planned compaction: the rows it replaces and the object that replaces them."""

    topic_id: uuid.UUID
    partition: int
    key: str
    data: mmap.mmap
    rows: Sequence[_Row]
    starts: Sequence[int]
    """Where each row's batch lies in the new object."""


def partition_key(topic_id: uuid.UUID, partition: int, base_offset: int) -> str:
    """``p/<topic id>/<partition>/<base offset>-<uuid>``: a compacted object's key."""
    return f"p/{topic_id}/{partition}/{base_offset}-{uuid.uuid4()}"


# The objects whose batches a compaction gathers: intake objects older than ``compact_after``,
# and compacted objects smaller than ``small_object_bytes``.
_SOURCE: LiteralString = (
    "((o.kind = 'intake'"
    "  AND o.created_at < clock_timestamp() - make_interval(secs => %s))"
    " OR (o.kind = 'partition' AND o.size < %s))"
)


async def candidates(db: Database, settings: CompactionSettings) -> list[tuple[uuid.UUID, int]]:
    """Partitions with at least ``min_batches`` batches in source objects (old intake ones,
    small compacted ones), from at least two objects (one object alone would only be copied),
    most such batches first."""
    async with db.transaction("streams.compact.candidates") as tx:
        rows = await tx.fetchall(
            "SELECT b.topic_id, b.partition FROM stream_batches b"  # noqa: S608 - constants
            "  JOIN stream_objects o ON o.key = b.object_key"
            " WHERE " + _SOURCE +
            " GROUP BY b.topic_id, b.partition"
            " HAVING count(*) >= %s AND count(DISTINCT b.object_key) >= 2"
            " ORDER BY count(*) DESC, b.topic_id, b.partition LIMIT %s",
            (settings.compact_after, settings.small_object_bytes, settings.min_batches,
             settings.partitions_per_round),
        )  # fmt: skip
    return [(r[0], int(r[1])) for r in rows]


async def plan_compaction(
    db: Database,
    store: ObjectStore,
    topic_id: uuid.UUID,
    partition: int,
    settings: CompactionSettings,
    pacer: Pacer | None = None,
) -> Compaction | None:
    """Read the partition's batches in source objects and build their object (None when there
    are fewer than ``min_batches``, or they all lie in one object); nothing is written."""
    async with db.transaction("streams.compact.read") as tx:
        found = [
            _Row(int(r[0]), int(r[1]), str(r[2]), int(r[3]), int(r[4]), int(r[5]))
            for r in await tx.fetchall(
                "SELECT b.base_offset, b.last_offset, b.object_key, b.byte_start,"  # noqa: S608
                "       b.byte_length, b.record_count"
                "  FROM stream_batches b JOIN stream_objects o ON o.key = b.object_key"
                " WHERE b.topic_id = %s AND b.partition = %s AND " + _SOURCE +
                " ORDER BY b.base_offset",
                (topic_id, partition, settings.compact_after, settings.small_object_bytes),
            )
        ]
    rows: list[_Row] = []
    size = 0
    for row in found:
        if rows and size + row.byte_length > settings.max_object_bytes:
            break
        rows.append(row)
        size += row.byte_length
    if len(rows) < max(1, settings.min_batches) or len({r.object_key for r in rows}) < 2:
        return None
    pieces = await _read(store, rows, pacer or Pacer(None))
    records = sum(r.record_count for r in rows)
    footer = encode_footer([Section(topic_id, partition, 0, size, records)])
    # one anonymous mapping: nothing is copied as it fills, and its pages are touched (and
    # faulted in) slice by slice below, not all at once on the event loop as a bytearray's
    out = mmap.mmap(-1, size + len(footer))
    out[size:] = footer
    view = memoryview(out)
    starts = []
    at = copied = 0
    for row in rows:
        first, data = pieces[row.object_key]
        source = memoryview(data)[row.byte_start - first :][: row.byte_length]
        if len(source) != row.byte_length:  # the object ends before the row's batch does
            _check(source, row)
        view[at : at + row.byte_length] = source
        batch = view[at : at + row.byte_length]
        _check(batch, row)
        set_base_offset(batch, 0, row.base_offset)
        starts.append(at)
        at += row.byte_length
        copied += row.byte_length
        if copied >= BUILD_SLICE:
            copied = 0
            await asyncio.sleep(0)
    view.release()
    key = partition_key(topic_id, partition, rows[0].base_offset)
    return Compaction(topic_id, partition, key, out, rows, starts)


async def apply_compaction(
    db: Database, store: ObjectStore, lease: NodeLease, plan: Compaction,
    pacer: Pacer | None = None,
) -> bool:
    """PUT the object (paced by ``pacer``), then commit the swap (see the module docstring).
    False when the rows changed meanwhile (nothing committed; the object is an orphan).
    ``LeaseLostError`` when the fence fails."""
    await store.put(plan.key, plan.data)
    if pacer is not None:
        await pacer.took(len(plan.data))

    async def body(tx: Transaction) -> bool:
        await check_job_lease(tx, lease, "compactor", db.name)
        live = await tx.fetchval(
            "SELECT 1 FROM stream_partitions p JOIN stream_topics t USING (topic_id)"
            " WHERE p.topic_id = %s AND p.partition = %s AND t.deleted_at IS NULL"
            "   FOR UPDATE OF p",
            (plan.topic_id, plan.partition),
        )
        if live is None:
            return False
        moved = await tx.execute(
            "UPDATE stream_batches b SET object_key = %s, byte_start = n.new_start"
            "  FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::bigint[], %s::bigint[])"
            "    AS n(base_offset, last_offset, object_key, byte_start, new_start)"
            " WHERE b.topic_id = %s AND b.partition = %s AND b.base_offset = n.base_offset"
            "   AND b.last_offset = n.last_offset AND b.object_key = n.object_key"
            "   AND b.byte_start = n.byte_start",
            (
                plan.key,
                [r.base_offset for r in plan.rows],
                [r.last_offset for r in plan.rows],
                [r.object_key for r in plan.rows],
                [r.byte_start for r in plan.rows],
                list(plan.starts),
                plan.topic_id,
                plan.partition,
            ),
        )
        if moved != len(plan.rows):
            raise _RowsChanged
        await tx.execute(
            "INSERT INTO stream_objects (key, kind, size, created_at, refs, state)"
            " VALUES (%s, 'partition', %s, clock_timestamp(), %s, 'live')",
            (plan.key, len(plan.data), len(plan.rows)),
        )
        await release_refs(tx, (r.object_key for r in plan.rows))
        return True

    try:
        return await db.run(body, "streams.compact", retries=_RETRIES)
    except _RowsChanged:
        return False


async def compact(
    db: Database, store: ObjectStore, lease: NodeLease, settings: CompactionSettings
) -> int:
    """One round, paced by ``settings.max_bytes_per_second``: passes over the candidate
    partitions, one object each per pass, until a pass compacts nothing or
    ``settings.round_seconds`` have passed (what is left waits for the next round); returns
    the objects written and committed."""
    pacer = Pacer(settings.max_bytes_per_second)
    loop = asyncio.get_running_loop()
    ends = loop.time() + settings.round_seconds
    done = 0
    while loop.time() < ends:
        before = done
        for topic_id, partition in await candidates(db, settings):
            if loop.time() >= ends:
                break
            plan = await plan_compaction(db, store, topic_id, partition, settings, pacer)
            if plan is not None and await apply_compaction(db, store, lease, plan, pacer):
                done += 1
        if done == before:
            break
    return done


class _RowsChanged(Exception):
    """The rows a compaction read are no longer all there: roll its transaction back."""


async def _read(
    store: ObjectStore, rows: Sequence[_Row], pacer: Pacer
) -> dict[str, tuple[int, bytes]]:
    """The rows' bytes, with one ranged GET per source object (a partition's batches lie
    together in an intake object), at most :data:`READS_IN_FLIGHT` at a time, paced by
    ``pacer``: by object, where the range read starts and its bytes."""
    spans: dict[str, tuple[int, int]] = {}
    for row in rows:
        first, end = spans.get(row.object_key, (row.byte_start, row.byte_start))
        spans[row.object_key] = (
            min(first, row.byte_start), max(end, row.byte_start + row.byte_length)
        )

    reads = asyncio.Semaphore(READS_IN_FLIGHT)

    async def one(key: str, first: int, end: int) -> tuple[str, tuple[int, bytes]]:
        async with reads:
            data = await store.get_range(key, first, end - first)
            await pacer.took(len(data))
            return key, (first, data)

    return dict(await asyncio.gather(*(one(k, f, e) for k, (f, e) in spans.items())))


def _check(batch: bytearray | memoryview, row: _Row) -> None:
    if len(batch) != row.byte_length or (
        (header := parse_header(batch, 0)).size != row.byte_length
        or header.last_offset_delta != row.last_offset - row.base_offset
    ):
        raise CorruptBatchError(
            f"object {row.object_key} at byte {row.byte_start}: not the batch of offsets "
            f"{row.base_offset}..{row.last_offset} ({row.byte_length} bytes) its index row names"
        )
