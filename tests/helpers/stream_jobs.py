"""Helpers of the tests of the streams' background jobs (compaction, retention, garbage
collection): registering nodes, producing through a real :class:`StreamWriter`, reading a
partition back whole, and looking at the index, the object rows and the store."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from wharf.cluster.catalog import NodeLease
from wharf.cluster.database import Database
from wharf.cluster.nodes import Membership, MembershipSettings
from wharf.cluster.objectstore import ObjectStore
from wharf.cluster.streams.reader import StreamReader
from wharf.cluster.streams.writer import Appended, AppendStatus, StreamWriter, WriterSettings
from wharf.storage.record_batch import RecordInput, build_batch, decode_records, iter_batches
from wharf.storage.validated import validate_batches

LONG = MembershipSettings(heartbeat_interval=1.0, lease_duration=60.0)
QUICK = WriterSettings(flush_window=0.001, commit_timeout=10.0)


async def register(db: Database, node_id: str) -> tuple[Membership, NodeLease]:
    """A node registered on a long lease (no heartbeats running)."""
    membership = Membership(db, node_id, "127.0.0.1", {"kafka": 9092}, LONG)
    await membership.register()
    return membership, NodeLease.of(membership)


def start_writer(db: Database, store: ObjectStore, lease: NodeLease) -> StreamWriter:
    writer = StreamWriter(db, store, lease.node_id, lambda: lease, QUICK)
    writer.start()
    return writer


async def append(
    writer: StreamWriter,
    topic_id: uuid.UUID,
    partition: int,
    values: Sequence[bytes],
    *,
    timestamp_ms: int | None = None,
) -> Appended:
    """One batch of ``values``, appended and committed (its own flush when awaited alone)."""
    data = build_batch([RecordInput(None, v, (), timestamp_ms) for v in values])
    answer = await writer.append(topic_id, partition, validate_batches(data, 1 << 20))
    assert answer.status is AppendStatus.APPENDED, answer
    return answer


async def read_all(
    db: Database, store: ObjectStore, topic_id: uuid.UUID, partition: int
) -> list[tuple[int, bytes | None]]:
    """Every visible record from the log start to the high watermark, through a reader of its
    own (no cached objects): ``(offset, value)``, every batch's CRC checked."""
    reader = StreamReader(db, store)
    position = await reader.position(topic_id, partition)
    offset = position.log_start_offset
    out: list[tuple[int, bytes | None]] = []
    while offset < position.high_watermark:
        data, _ = await reader.read(topic_id, partition, offset, 1 << 16)
        for at, header in iter_batches(data):
            for record in decode_records(data[at : at + header.size]):
                if record.offset >= offset:
                    out.append((record.offset, record.value))
        offset = out[-1][0] + 1
    return out


async def rows(db: Database, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    async with db.transaction() as tx:
        return await tx.fetchall(sql, params)  # type: ignore[arg-type]


async def index_keys(db: Database) -> set[str]:
    """The objects the index references."""
    return {r[0] for r in await rows(db, "SELECT DISTINCT object_key FROM stream_batches")}


async def object_rows(db: Database) -> dict[str, tuple[str, int, str]]:
    """Every ``stream_objects`` row: key -> (kind, refs, state)."""
    found = await rows(db, "SELECT key, kind, refs, state FROM stream_objects")
    return {r[0]: (r[1], int(r[2]), r[3]) for r in found}


async def stored_keys(store: ObjectStore) -> set[str]:
    return {info.key for info in await store.list()}
