import asyncio
import os
import shutil
from pathlib import Path

from wharf.core.config import FsyncPolicy
from wharf.core.streams.offsets import LOG_NAME, OffsetAndMetadata, OffsetStore, TopicPartition

TP0 = TopicPartition("events", 0)
TP1 = TopicPartition("events", 1)


def open_store(path: Path, **kwargs: int) -> OffsetStore:
    store = OffsetStore.open(path, fsync=FsyncPolicy.ALWAYS, **kwargs)
    store.start()
    return store


async def test_commits_survive_reopen(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    await store.commit("g1", {TP0: OffsetAndMetadata(5, "meta", 3, 1000)})
    await store.commit("g1", {TP0: OffsetAndMetadata(7, "", -1, 2000), TP1: OffsetAndMetadata(1)})
    await store.commit("g2", {TP1: OffsetAndMetadata(9)})
    await store.delete("g2", [TP1])
    await store.close()

    store = open_store(tmp_path)
    assert store.fetch("g1") == {TP0: OffsetAndMetadata(7, "", -1, 2000), TP1: OffsetAndMetadata(1)}
    assert store.fetch("g1", [TP1, TopicPartition("other", 0)]) == {TP1: OffsetAndMetadata(1)}
    assert store.groups() == ["g1"]
    assert not store.has_group("g2")
    await store.delete_group("g1")
    await store.close()
    store = open_store(tmp_path)
    assert store.groups() == []
    await store.close()


async def test_concurrent_commits_share_fsyncs(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    await asyncio.gather(
        *(store.commit(f"g{i}", {TP0: OffsetAndMetadata(i)}) for i in range(50))
    )
    assert store._committer.fsyncs < 50
    await store.close()
    store = open_store(tmp_path)
    assert {g: store.fetch(g)[TP0].offset for g in store.groups()} == {
        f"g{i}": i for i in range(50)
    }
    await store.close()


async def test_log_is_compacted_when_it_grows_and_keeps_latest_values(tmp_path: Path) -> None:
    store = open_store(tmp_path, compact_min_records=40)
    for i in range(100):
        await store.commit("g", {TP0: OffsetAndMetadata(i), TP1: OffsetAndMetadata(1000 + i)})
    assert store.compactions >= 1
    await store.close()
    assert not (tmp_path / (LOG_NAME + ".compact")).exists()
    assert not (tmp_path / (LOG_NAME + ".old")).exists()
    store = open_store(tmp_path, compact_min_records=40)
    assert store.fetch("g") == {TP0: OffsetAndMetadata(99), TP1: OffsetAndMetadata(1099)}
    assert store._records < 40
    await store.close()


async def test_interrupted_swap_is_finished_or_discarded(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    await store.commit("g", {TP0: OffsetAndMetadata(42)})
    await store.close()
    live = tmp_path / LOG_NAME
    # crash while the rewritten log was being written: the partial copy is discarded
    (tmp_path / (LOG_NAME + ".compact")).mkdir()
    store = open_store(tmp_path)
    assert store.fetch("g") == {TP0: OffsetAndMetadata(42)}
    await store.close()
    assert not (tmp_path / (LOG_NAME + ".compact")).exists()
    # crash between the two renames: the complete rewritten log becomes the live one
    shutil.copytree(live, tmp_path / (LOG_NAME + ".compact"))
    os.rename(live, tmp_path / (LOG_NAME + ".old"))
    store = open_store(tmp_path)
    assert store.fetch("g") == {TP0: OffsetAndMetadata(42)}
    await store.close()
    assert not (tmp_path / (LOG_NAME + ".old")).exists()


async def test_expire_removes_only_old_offsets_of_empty_groups(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    await store.commit("idle", {TP0: OffsetAndMetadata(1, commit_timestamp_ms=1_000)})
    await store.commit("recent", {TP0: OffsetAndMetadata(1, commit_timestamp_ms=9_000)})
    await store.commit("active", {TP0: OffsetAndMetadata(1, commit_timestamp_ms=1_000)})
    since = {"idle": 0, "recent": 0, "active": None}
    removed = await store.expire(10_000, 5_000, since.__getitem__)
    assert removed == 1
    assert store.groups() == ["active", "recent"]
    await store.close()
    store = open_store(tmp_path)
    assert store.groups() == ["active", "recent"]
    await store.close()


async def test_group_metadata_is_kept_through_compaction_and_reopen(tmp_path: Path) -> None:
    store = open_store(tmp_path, compact_min_records=20)
    await store.store_group_metadata("g", b"snapshot-1")
    await store.store_group_metadata("h", b"other")
    for i in range(40):
        await store.commit("g", {TP0: OffsetAndMetadata(i)})
    await store.store_group_metadata("g", b"snapshot-2")
    await store.store_group_metadata("h", None)
    assert store.compactions >= 1
    await store.close()
    store = open_store(tmp_path)
    assert store.group_metadata() == {"g": b"snapshot-2"}
    assert store.fetch("g") == {TP0: OffsetAndMetadata(39)}
    await store.delete_group("g")
    assert store.group_metadata() == {}
    await store.close()
    store = open_store(tmp_path)
    assert store.group_metadata() == {} and store.groups() == []
    await store.close()
