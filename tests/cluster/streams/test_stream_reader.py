"""The cluster's read path against real PostgreSQL and SeaweedFS: index rows and objects are
written here the way the writer commits them (batches as the producer sent them, base offset 0),
then read back: whole batches from the one holding the offset, the byte budget, several objects,
the offset range, the patched base offsets with CRCs intact, the cache and ListOffsets."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence

import pytest

from wharf.cluster.catalog import NodeLease, create_topic, delete_topic
from wharf.cluster.database import Database, Transaction
from wharf.cluster.objectstore import ObjectStore
from wharf.cluster.streams.reader import PartitionPosition, StreamReader
from wharf.errors import (
    CorruptBatchError,
    InvalidArgumentError,
    NotFoundError,
    OffsetOutOfRangeError,
    StorageError,
)
from wharf.storage.record_batch import (
    Record,
    RecordInput,
    build_batch,
    decode_records,
    iter_batches,
    parse_header,
)
from wharf.storage.validated import validate_batches

Partition = tuple[uuid.UUID, int]


def batch(values: Sequence[str], timestamps: Sequence[int] | None = None) -> bytes:
    """One batch as a producer sends it: base offset 0, leader epoch -1."""
    stamps = timestamps or [1_000] * len(values)
    records = [
        RecordInput(None, v.encode(), (), ts) for v, ts in zip(values, stamps, strict=True)
    ]
    return build_batch(records)


async def commit(
    db: Database,
    store: ObjectStore,
    lease: NodeLease,
    parts: dict[Partition, list[bytes]],
    *,
    lead: bytes = b"",
) -> tuple[str, bytes]:
    """What the writer's flush leaves: one intake object holding the partitions' batches back to
    back (after ``lead`` bytes), its ``stream_objects`` row, one ``stream_batches`` row per batch
    at the partition's next offsets, the partitions moved on, and the notification."""
    key = f"intake/{lease.node_id}/{uuid.uuid4()}"
    data = bytearray(lead)
    placed: list[tuple[Partition, int, bytes]] = []
    for part, batches in parts.items():
        for one in batches:
            placed.append((part, len(data), one))
            data += one
    await store.put(key, bytes(data))

    async def body(tx: Transaction) -> None:
        await tx.execute(
            "INSERT INTO stream_objects (key, kind, flush_id, size, node_id, node_epoch,"
            " created_at, refs, state)"
            " VALUES (%s, 'intake', %s, %s, %s, %s, clock_timestamp(), %s, 'live')",
            (key, uuid.uuid4(), len(data), lease.node_id, lease.epoch, len(placed)),
        )
        notices = []
        for part in parts:
            next_offset = await tx.fetchval(
                "SELECT next_offset FROM stream_partitions WHERE topic_id = %s AND partition = %s"
                " FOR UPDATE",
                part,
            )
            for where, start, one in placed:
                if where != part:
                    continue
                header = parse_header(one)
                await tx.execute(
                    "INSERT INTO stream_batches (topic_id, partition, base_offset, last_offset,"
                    " object_key, byte_start, byte_length, record_count, first_timestamp,"
                    " max_timestamp, producer_id, producer_epoch, base_sequence, attributes)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
                    (
                        *part, next_offset, next_offset + header.last_offset_delta, key, start,
                        len(one), header.records_count, header.base_timestamp,
                        header.max_timestamp, header.producer_id, header.producer_epoch,
                        header.base_sequence, header.attributes,
                    ),
                )
                next_offset += header.last_offset_delta + 1
            await tx.execute(
                "UPDATE stream_partitions SET next_offset = %s, bytes = bytes + %s"
                " WHERE topic_id = %s AND partition = %s",
                (next_offset, sum(len(b) for b in parts[part]), *part),
            )
            notices.append(f"{part[0].hex}:{part[1]}:{next_offset}")
        await tx.execute("SELECT pg_notify('wharf_streams', %s)", (" ".join(notices),))

    await db.run(body)
    return key, bytes(data)


async def set_log_start(db: Database, part: Partition, offset: int) -> None:
    async with db.transaction() as tx:
        await tx.execute(
            "UPDATE stream_partitions SET log_start_offset = %s"
            " WHERE topic_id = %s AND partition = %s",
            (offset, *part),
        )


def records_of(data: bytes) -> list[Record]:
    """Every record in the fetched bytes, each batch decoded (CRC checked)."""
    return [
        record
        for position, header in iter_batches(data)
        for record in decode_records(data[position : position + header.size])
    ]


def offsets_of(data: bytes) -> list[int]:
    return [record.offset for record in records_of(data)]


def values_of(data: bytes) -> list[bytes | None]:
    return [record.value for record in records_of(data)]


class GetCounter:
    """The store's ``observe`` hook: how many GETs went out."""

    def __init__(self) -> None:
        self.gets = 0

    def __call__(self, operation: str, seconds: float) -> None:
        if operation in ("get", "get_range"):
            self.gets += 1


@pytest.fixture
async def topic(db: Database, node_lease: NodeLease) -> uuid.UUID:
    info = await create_topic(db, node_lease, "orders", 2)
    return info.topic_id


@pytest.fixture
def counter() -> GetCounter:
    return GetCounter()


@pytest.fixture
async def store(test_store: ObjectStore, counter: GetCounter) -> AsyncIterator[ObjectStore]:
    """The test's store, opened again with a GET counter."""
    async with await ObjectStore.open(test_store.config, observe=counter) as opened:
        yield opened


@pytest.fixture
def reader(db: Database, store: ObjectStore) -> StreamReader:
    return StreamReader(db, store)


async def test_reads_whole_batches_from_the_one_holding_the_offset(
    db: Database, store: ObjectStore, node_lease: NodeLease, topic: uuid.UUID,
    reader: StreamReader,
) -> None:
    batches = [batch(["a", "b", "c"]), batch(["d", "e", "f"]), batch(["g", "h", "i"])]
    await commit(db, store, node_lease, {(topic, 0): batches})

    data, position = await reader.read(topic, 0, 0, 1 << 20)
    assert position == PartitionPosition(0, 9)
    assert offsets_of(data) == list(range(9))
    assert values_of(data) == [v.encode() for v in "abcdefghi"]

    mid, _ = await reader.read(topic, 0, 4, 1 << 20)
    assert offsets_of(mid) == [3, 4, 5, 6, 7, 8]
    last, _ = await reader.read(topic, 0, 8, 1 << 20)
    assert offsets_of(last) == [6, 7, 8]


async def test_base_offsets_and_leader_epochs_are_set_and_crcs_still_hold(
    db: Database, store: ObjectStore, node_lease: NodeLease, topic: uuid.UUID,
    reader: StreamReader,
) -> None:
    batches = [batch(["a", "b"]), batch(["c"]), batch(["d", "e", "f"])]
    assert {parse_header(b).base_offset for b in batches} == {0}
    assert {parse_header(b).partition_leader_epoch for b in batches} == {-1}
    await commit(db, store, node_lease, {(topic, 0): batches})

    data, _ = await reader.read(topic, 0, 0, 1 << 20)
    validated = validate_batches(data, max_batch_bytes=1 << 20)  # CRC of every batch
    assert [h.base_offset for h in validated.headers] == [0, 2, 3]
    assert [h.partition_leader_epoch for h in validated.headers] == [0, 0, 0]
    # nothing but those two fields differs from what the producer sent
    for position, stored in zip(validated.positions, batches, strict=True):
        sent = data[position : position + len(stored)]
        assert sent[8:12] == stored[8:12] and sent[16:] == stored[16:]


async def test_byte_budget_whole_batches_and_the_first_even_when_over(
    db: Database, store: ObjectStore, node_lease: NodeLease, topic: uuid.UUID,
    reader: StreamReader,
) -> None:
    batches = [batch(["x" * 100]), batch(["y" * 50, "z"]), batch(["w" * 10])]
    sizes = [len(b) for b in batches]
    await commit(db, store, node_lease, {(topic, 0): batches})

    one, _ = await reader.read(topic, 0, 0, 1)
    assert len(one) == sizes[0] and offsets_of(one) == [0]
    two, _ = await reader.read(topic, 0, 0, sizes[0] + sizes[1])
    assert offsets_of(two) == [0, 1, 2]
    still_one, _ = await reader.read(topic, 0, 0, sizes[0] + sizes[1] - 1)
    assert offsets_of(still_one) == [0]
    from_mid, _ = await reader.read(topic, 0, 2, sizes[1] + sizes[2])
    assert offsets_of(from_mid) == [1, 2, 3]


async def test_reads_across_objects_shared_with_other_partitions(
    db: Database, store: ObjectStore, node_lease: NodeLease, topic: uuid.UUID,
    reader: StreamReader, counter: GetCounter,
) -> None:
    await commit(db, store, node_lease, {(topic, 1): [batch(["p1"])], (topic, 0): [batch(["a"])]})
    await commit(
        db, store, node_lease,
        {(topic, 0): [batch(["b", "c"]), batch(["d"])], (topic, 1): [batch(["p1b"])]},
        lead=b"footer-or-anything-before",
    )
    await commit(db, store, node_lease, {(topic, 0): [batch(["e"])]})

    data, position = await reader.read(topic, 0, 0, 1 << 20)
    assert position.high_watermark == 5
    assert offsets_of(data) == [0, 1, 2, 3, 4]
    assert values_of(data) == [b"a", b"b", b"c", b"d", b"e"]
    assert counter.gets == 3 and reader.cache_misses == 3  # one GET per object
    other, _ = await reader.read(topic, 1, 0, 1 << 20)
    assert offsets_of(other) == [0, 1]
    assert counter.gets == 3  # the same objects, from the cache


async def test_offsets_out_of_range_and_at_the_high_watermark(
    db: Database, store: ObjectStore, node_lease: NodeLease, topic: uuid.UUID,
    reader: StreamReader,
) -> None:
    await commit(db, store, node_lease, {(topic, 0): [batch(["a", "b", "c"]), batch(["d", "e"])]})
    await set_log_start(db, (topic, 0), 2)
    assert await reader.position(topic, 0) == PartitionPosition(2, 5)

    with pytest.raises(OffsetOutOfRangeError, match="log starts at 2"):
        await reader.read(topic, 0, 1, 1 << 20)
    with pytest.raises(OffsetOutOfRangeError, match="high watermark is 5"):
        await reader.read(topic, 0, 6, 1 << 20)
    assert await reader.read(topic, 0, 5, 1 << 20) == (b"", PartitionPosition(2, 5))
    # the log start inside a batch: the whole batch comes, the client skips what is below
    data, _ = await reader.read(topic, 0, 2, 1 << 20)
    assert offsets_of(data) == [0, 1, 2, 3, 4]
    empty, position = await reader.read(topic, 1, 0, 1 << 20)
    assert empty == b"" and position == PartitionPosition(0, 0)


async def test_unknown_or_deleted_partitions_are_not_found(
    db: Database, store: ObjectStore, node_lease: NodeLease, topic: uuid.UUID,
    reader: StreamReader,
) -> None:
    with pytest.raises(NotFoundError):
        await reader.read(topic, 2, 0, 1 << 20)
    with pytest.raises(NotFoundError):
        await reader.position(uuid.uuid4(), 0)
    await delete_topic(db, node_lease, "orders")
    with pytest.raises(NotFoundError):
        await reader.read(topic, 0, 0, 1 << 20)
    with pytest.raises(NotFoundError):
        await reader.list_offset(topic, 0, -1)


async def test_a_batch_unlike_its_index_row_is_refused(
    db: Database, store: ObjectStore, node_lease: NodeLease, topic: uuid.UUID,
    reader: StreamReader,
) -> None:
    await commit(db, store, node_lease, {(topic, 0): [batch(["a", "b"])]})
    async with db.transaction() as tx:
        await tx.execute("UPDATE stream_batches SET last_offset = base_offset")
    with pytest.raises(CorruptBatchError, match="offsets 0..0"):
        await reader.read(topic, 0, 0, 1 << 20)
    async with db.transaction() as tx:
        await tx.execute("UPDATE stream_batches SET byte_length = byte_length + 10")
    with pytest.raises(StorageError, match="ends at byte"):
        await reader.read(topic, 0, 0, 1 << 20)


async def test_the_second_read_comes_from_the_cache(
    db: Database, store: ObjectStore, node_lease: NodeLease, topic: uuid.UUID,
    reader: StreamReader, counter: GetCounter,
) -> None:
    await commit(db, store, node_lease, {(topic, 0): [batch(["a"]), batch(["b"])]})
    first, _ = await reader.read(topic, 0, 0, 1 << 20)
    assert (counter.gets, reader.cache_misses, reader.cache_hits) == (1, 1, 0)
    second, _ = await reader.read(topic, 0, 1, 1 << 20)
    assert (counter.gets, reader.cache_misses, reader.cache_hits) == (1, 1, 1)
    assert offsets_of(second) == [1] and offsets_of(first) == [0, 1]


async def test_remembered_objects_are_read_without_a_get(
    db: Database, store: ObjectStore, node_lease: NodeLease, topic: uuid.UUID,
    reader: StreamReader, counter: GetCounter,
) -> None:
    key, data = await commit(db, store, node_lease, {(topic, 0): [batch(["a", "b"])]})
    reader.remember(key, data)
    fetched, _ = await reader.read(topic, 0, 0, 1 << 20)
    assert offsets_of(fetched) == [0, 1]
    assert (counter.gets, reader.cache_misses, reader.cache_hits) == (0, 0, 1)


async def test_concurrent_misses_for_one_object_share_one_get(
    db: Database, store: ObjectStore, node_lease: NodeLease, topic: uuid.UUID,
    reader: StreamReader, counter: GetCounter,
) -> None:
    await commit(db, store, node_lease, {(topic, 0): [batch(["a"])], (topic, 1): [batch(["b"])]})
    reads = [reader.read(topic, p, 0, 1 << 20) for p in (0, 1, 0, 1, 0)]
    results = await asyncio.gather(*reads)
    assert [offsets_of(data) for data, _ in results] == [[0]] * 5
    assert counter.gets == 1
    assert (reader.cache_misses, reader.cache_hits) == (1, 4)


async def test_large_objects_are_read_in_aligned_chunks(
    db: Database, store: ObjectStore, node_lease: NodeLease, topic: uuid.UUID,
    counter: GetCounter,
) -> None:
    batches = [batch([f"{i:04d}" * 100]) for i in range(8)]
    size = len(batches[0])
    assert 2 * size <= 1024 < 3 * size and 3 * 1024 < 8 * size < 4 * 1024  # four 1 KiB chunks
    await commit(db, store, node_lease, {(topic, 0): batches})
    reader = StreamReader(db, store, cache_bytes=3 * 1024, chunk_bytes=1024)

    first, _ = await reader.read(topic, 0, 0, 2 * size)  # batches 0-1: chunk 0
    assert offsets_of(first) == [0, 1]
    assert (counter.gets, reader.cache_misses) == (1, 1)
    again, _ = await reader.read(topic, 0, 1, 1)
    assert offsets_of(again) == [1] and counter.gets == 1
    rest, _ = await reader.read(topic, 0, 2, 1 << 20)  # chunks 0-3: 0 cached, 1-3 in one GET
    assert offsets_of(rest) == [2, 3, 4, 5, 6, 7]
    assert (counter.gets, reader.cache_misses) == (2, 4)
    assert reader.cache_bytes_used <= 3 * 1024  # the least recently used chunk made way
    await reader.read(topic, 0, 0, 1)
    assert (counter.gets, reader.cache_misses) == (3, 5)


async def test_list_offsets_latest_earliest_max_and_by_timestamp(
    db: Database, store: ObjectStore, node_lease: NodeLease, topic: uuid.UUID,
    reader: StreamReader,
) -> None:
    part = (topic, 0)
    assert await reader.list_offset(topic, 0, -1) == (0, -1)
    assert await reader.list_offset(topic, 0, -3) == (-1, -1)
    assert await reader.list_offset(topic, 0, 0) == (-1, -1)
    await commit(db, store, node_lease, {part: [batch(["a", "b", "c"], [100, 101, 102])]})
    await commit(
        db, store, node_lease,
        {part: [batch(["d", "e", "f"], [300, 200, 250]), batch(["g", "h", "i"], [150, 160, 170])]},
    )

    assert await reader.list_offset(topic, 0, -1) == (9, -1)
    assert await reader.list_offset(topic, 0, -2) == (0, -1)
    assert await reader.list_offset(topic, 0, -3) == (3, 300)
    assert await reader.list_offset(topic, 0, 0) == (0, 100)
    assert await reader.list_offset(topic, 0, 101) == (1, 101)
    assert await reader.list_offset(topic, 0, 201) == (3, 300)  # timestamps need not grow
    assert await reader.list_offset(topic, 0, 301) == (-1, -1)
    with pytest.raises(InvalidArgumentError):
        await reader.list_offset(topic, 0, -4)

    # the log start inside the batch that holds the largest timestamp hides that record
    await set_log_start(db, part, 4)
    assert await reader.list_offset(topic, 0, -2) == (4, -1)
    assert await reader.list_offset(topic, 0, -3) == (5, 250)
    assert await reader.list_offset(topic, 0, 101) == (4, 200)
    assert await reader.list_offset(topic, 0, 260) == (-1, -1)
    await set_log_start(db, part, 6)
    assert await reader.list_offset(topic, 0, -3) == (8, 170)


async def test_observe_sees_reads_and_list_offsets(
    db: Database, store: ObjectStore, node_lease: NodeLease, topic: uuid.UUID,
) -> None:
    seen: list[str] = []
    reader = StreamReader(db, store, observe=lambda op, seconds: seen.append(op))
    await commit(db, store, node_lease, {(topic, 0): [batch(["a"])]})
    await reader.read(topic, 0, 0, 100)
    await reader.list_offset(topic, 0, -1)
    with pytest.raises(OffsetOutOfRangeError):
        await reader.read(topic, 0, 7, 100)
    assert seen == ["read", "list_offset", "read"]

