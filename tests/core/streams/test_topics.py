import asyncio
import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from helpers.log_gate import watch_log_opens
from wharf.core.config import BrokerConfig, FsyncPolicy, TopicDefaults
from wharf.core.snapshot_journal import load_snapshot
from wharf.core.streams.errors import (
    ErrorCode,
    InvalidConfigError,
    InvalidPartitionsError,
    InvalidTopicError,
    StreamsError,
    TopicExistsError,
    UnknownTopicError,
)
from wharf.core.streams.partition import Partition
from wharf.core.streams.topic_config import ConfigSource
from wharf.core.streams.topics import TopicManager, replay_catalogue
from wharf.errors import StorageError
from wharf.storage.journal import JournalFile
from wharf.storage.log import Log
from wharf.storage.record_batch import RecordInput


def config(**kwargs: object) -> BrokerConfig:
    return BrokerConfig(fsync=FsyncPolicy.ALWAYS, **kwargs)  # type: ignore[arg-type]


def open_manager(path: Path, broker_config: BrokerConfig | None = None) -> TopicManager:
    manager = TopicManager.open(path, broker_config or config())
    manager.start()
    return manager


async def test_topics_ids_and_configs_survive_restart(tmp_path: Path) -> None:
    manager = open_manager(tmp_path)
    events = await manager.create("events", 3, {"retention.ms": "1000", "min.insync.replicas": "2"})
    logs = await manager.create("logs")
    assert len(logs.partitions) == 1
    await manager.partition("events", 2).append_records([RecordInput(b"k", b"v")])
    await manager.close()

    manager = open_manager(tmp_path)
    assert [t.name for t in manager.list()] == ["events", "logs"]
    again = manager.get("events")
    assert again.topic_id == events.topic_id
    assert manager.by_id(events.topic_id) is again
    assert manager.get("logs").topic_id == logs.topic_id != events.topic_id
    assert len(again.partitions) == 3
    assert again.config.retention_ms == 1000
    assert again.overrides == {"retention.ms": "1000", "min.insync.replicas": "2"}
    assert manager.partition("events", 2).log_end_offset == 1
    catalogue = load_snapshot(tmp_path, "topics", replay_catalogue)
    assert catalogue is not None
    assert {t["name"] for t in catalogue["topics"]} == {"events", "logs"}
    await manager.close()


async def test_names_are_checked_like_kafka(tmp_path: Path) -> None:
    manager = open_manager(tmp_path)
    for bad in ["", ".", "..", "a" * 250, "has space", "slash/name", "__consumer_offsets"]:
        with pytest.raises(InvalidTopicError):
            await manager.create(bad)
    await manager.create("a.b")
    with pytest.raises(InvalidTopicError, match="collides"):
        await manager.create("a_b")
    with pytest.raises(TopicExistsError):
        await manager.create("a.b")
    await manager.create("x" * 249)
    await manager.close()


async def test_partition_counts_and_replication_are_validated(tmp_path: Path) -> None:
    manager = open_manager(tmp_path)
    with pytest.raises(InvalidPartitionsError):
        await manager.create("t", 0)
    with pytest.raises(StreamsError) as rf:
        await manager.create("t", 1, replication_factor=3)
    assert rf.value.code is ErrorCode.INVALID_REPLICATION_FACTOR
    with pytest.raises(InvalidConfigError):
        await manager.create("t", 1, {"retention.ms": "soon"})
    with pytest.raises(InvalidConfigError):
        await manager.create("t", 1, {"no.such.config": "1"})
    with pytest.raises(InvalidConfigError):
        await manager.create("t", 1, {"cleanup.policy": "shred"})
    checked = await manager.create("t", 2, validate_only=True)
    assert checked.name == "t" and manager.find("t") is None
    assert manager.list() == []
    await manager.close()


async def test_add_partitions_grows_and_persists(tmp_path: Path) -> None:
    manager = open_manager(tmp_path)
    await manager.create("t", 2)
    with pytest.raises(InvalidPartitionsError):
        await manager.add_partitions("t", 2)
    await manager.add_partitions("t", 4)
    await manager.partition("t", 3).append_records([RecordInput(None, b"v")])
    await manager.close()
    manager = open_manager(tmp_path)
    assert len(manager.get("t").partitions) == 4
    assert manager.partition("t", 3).log_end_offset == 1
    with pytest.raises(UnknownTopicError):
        manager.partition("t", 4)
    await manager.close()


async def test_delete_removes_data_and_recreate_starts_empty(tmp_path: Path) -> None:
    manager = open_manager(tmp_path)
    old = await manager.create("t", 2)
    await manager.partition("t", 0).append_records([RecordInput(None, b"v")])
    await manager.delete("t")
    with pytest.raises(UnknownTopicError):
        manager.get("t")
    assert not (tmp_path / "topics" / "t-0").exists()
    new = await manager.create("t", 1)
    assert new.topic_id != old.topic_id
    assert manager.partition("t", 0).log_end_offset == 0
    await manager.close()


async def test_log_directories_missing_from_catalogue_are_removed_on_open(tmp_path: Path) -> None:
    manager = open_manager(tmp_path)
    await manager.create("keep", 1)
    await manager.partition("keep", 0).append_records([RecordInput(None, b"v")])
    await manager.close()
    # as if a crash happened after the catalogue dropped a topic but before its logs went
    (tmp_path / "topics" / "gone-0").mkdir()
    (tmp_path / "topics" / "keep-5").mkdir()
    manager = open_manager(tmp_path)
    assert sorted(p.name for p in (tmp_path / "topics").iterdir()) == ["keep-0"]
    await manager.close()


async def test_describe_and_alter_configs(tmp_path: Path) -> None:
    defaults = TopicDefaults(retention_ms=5000)
    manager = open_manager(tmp_path, config(topic_defaults=defaults))
    await manager.create("t", 1, {"segment.bytes": "1000"})
    entries = {e.name: e for e in manager.describe_configs("t")}
    assert entries["retention.ms"].value == "5000"
    assert entries["retention.ms"].source is ConfigSource.DEFAULT_CONFIG
    assert entries["segment.bytes"].value == "1000"
    assert not entries["segment.bytes"].is_default
    assert entries["retention.bytes"].value == "-1"

    await manager.alter_configs("t", {"retention.ms": "-1"})
    topic = manager.get("t")
    assert topic.config.retention_ms is None and topic.config.segment_bytes == 1000
    assert topic.partitions[0].log.config.retention_ms is None
    await manager.alter_configs("t", delete=["segment.bytes"])
    assert manager.get("t").overrides == {"retention.ms": "-1"}
    await manager.alter_configs("t", {"max.message.bytes": "500"}, replace=True)
    assert manager.get("t").overrides == {"max.message.bytes": "500"}
    with pytest.raises(InvalidConfigError):
        await manager.alter_configs("t", {"segment.ms": "0"})
    await manager.alter_configs("t", {"segment.ms": "10"}, validate_only=True)
    assert "segment.ms" not in manager.get("t").overrides
    await manager.close()
    manager = open_manager(tmp_path, config(topic_defaults=defaults))
    assert manager.get("t").config.max_message_bytes == 500
    assert manager.get("t").config.retention_ms == 5000
    await manager.close()


async def test_auto_create_follows_the_setting(tmp_path: Path) -> None:
    manager = open_manager(tmp_path, config(topic_defaults=TopicDefaults(partitions=2)))
    auto = await manager.ensure("auto")
    assert len(auto.partitions) == 2
    assert await manager.ensure("auto") is auto
    await manager.close()
    manager = open_manager(tmp_path / "off", config(auto_create_topics=False))
    with pytest.raises(UnknownTopicError):
        await manager.ensure("auto")
    await manager.close()


async def test_partition_handles_of_a_deleted_topic_report_unknown(tmp_path: Path) -> None:
    manager = open_manager(tmp_path)
    await manager.create("t", 1)
    handle = manager.partition("t", 0)
    await manager.delete("t")
    with pytest.raises(UnknownTopicError):
        await handle.append_records([RecordInput(None, b"late")])
    with pytest.raises(UnknownTopicError):
        handle.read(0, 100)
    await manager.close()


def test_unreadable_catalogue_is_reported_not_guessed(tmp_path: Path) -> None:
    (tmp_path / "topics.json").write_text('{"version": 1, "topics": [{"name": 5}]}')
    with pytest.raises(StorageError, match="catalogue"):
        TopicManager.open(tmp_path, config())


async def test_a_topic_whose_creator_went_away_while_it_was_saved_is_still_created(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = open_manager(tmp_path)
    started, gate = threading.Event(), threading.Event()
    real_create = JournalFile.create

    def gated_create(cls: type[JournalFile], path: Path) -> JournalFile:
        started.set()
        assert gate.wait(30)
        return real_create(path)

    monkeypatch.setattr(JournalFile, "create", classmethod(gated_create))
    creating = asyncio.create_task(manager.create("events", 2))
    while not started.is_set():
        await asyncio.sleep(0.001)
    assert manager.find("events") is None  # not visible before the catalogue has it
    creating.cancel()  # its connection was lost
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await creating
    with pytest.raises(TopicExistsError):  # waits for the first creation, which finished
        await manager.create("events", 2)
    assert manager.get("events").partition_count == 2
    await manager.close()
    monkeypatch.undo()
    manager = open_manager(tmp_path)
    assert manager.get("events").partition_count == 2
    await manager.close()


async def test_a_new_partition_makes_no_directory_until_its_first_record(tmp_path: Path) -> None:
    manager = open_manager(tmp_path)
    await manager.create("t", 3)
    assert list((tmp_path / "topics").iterdir()) == []
    p1 = manager.partition("t", 1)
    assert (p1.high_watermark, p1.log_start_offset, p1.size_bytes) == (0, 0, 0)
    assert await p1.fetch(0, 1000) == b""
    assert await p1.find_offset(-1) == (0, -1)
    assert not p1.is_open
    await p1.append_records([RecordInput(b"k", b"v")])
    assert [p.name for p in (tmp_path / "topics").iterdir()] == ["t-1"]
    assert [r.value for r in await p1.fetch_records(0, 10)] == [b"v"]
    await manager.close()


async def test_after_a_clean_close_logs_open_only_when_needed(tmp_path: Path) -> None:
    manager = open_manager(tmp_path)
    await manager.create("t", 2, {"retention.ms": "60000"})
    partition = manager.partition("t", 0)
    for i in range(3):
        await partition.append_records([RecordInput(None, b"v%d" % i)])
    size = partition.size_bytes
    await manager.close()

    manager = open_manager(tmp_path)
    assert not (tmp_path / "topic-summaries.json").exists()  # a crash now is not clean
    p0, p1 = manager.get("t").partitions
    assert not p0.is_open and not p1.is_open
    assert (p0.log_start_offset, p0.high_watermark, p0.log_end_offset) == (0, 3, 3)
    assert p0.size_bytes == size
    assert await p0.fetch(3, 1000) == b""  # at the end: answered from the summary
    assert await p0.find_offset(-2) == (0, -1)
    assert manager.enforce_retention(0) == 0  # nothing old enough: no log opened
    assert not p0.is_open
    assert [r.value for r in await p0.fetch_records(1, 10)] == [b"v1", b"v2"]
    assert p0.is_open and not p1.is_open
    result = await p0.append_records([RecordInput(None, b"v3")])
    assert result.base_offset == 3
    await manager.close()


async def crashed_copies(tmp_path: Path, count: int) -> list[Path]:
    """``count`` copies of a data directory as kill -9 left it: topic ``t``'s partition 1
    holds a record from before a clean restart and one acknowledged after it; partition 0
    was never written."""
    copies = [tmp_path.with_name(f"{tmp_path.name}-crash{i}") for i in range(count)]
    manager = open_manager(tmp_path)
    await manager.create("t", 2)
    await manager.partition("t", 1).append_records([RecordInput(None, b"kept")])
    await manager.close()
    manager = open_manager(tmp_path)  # takes the summaries away
    await manager.partition("t", 1).append_records([RecordInput(None, b"acked")])
    for copy in copies:
        shutil.copytree(tmp_path, copy)  # the disk as a kill -9 leaves it
    await manager.close()
    return copies


async def test_after_a_crash_logs_are_recovered_in_the_background(tmp_path: Path) -> None:
    copies = await crashed_copies(tmp_path, 1)
    again = open_manager(copies[0])
    p0, p1 = again.get("t").partitions
    assert not p0.is_open and not p0.recovering  # never written: nothing to recover
    assert p1.recovering and not p1.is_open  # the open read no log
    assert again.enforce_retention(10**15) == 0  # not before the log is recovered
    assert not p1.is_open
    await again.recovered()
    assert not p1.recovering and not p1.is_open  # recovered, closed again: its summary kept
    assert p1.high_watermark == 2 and not p1.is_open
    assert [r.value for r in await p1.fetch_records(0, 10)] == [b"kept", b"acked"]
    await again.close()


async def test_a_partition_used_before_the_background_reaches_it_is_opened_by_that_use(
    tmp_path: Path,
) -> None:
    copies = await crashed_copies(tmp_path, 2)
    again = open_manager(copies[0])
    p1 = again.partition("t", 1)
    assert p1.recovering
    assert p1.high_watermark == 2  # cannot wait: the log is opened here
    assert p1.is_open and not p1.recovering
    await again.recovered()
    await again.close()
    again = open_manager(copies[1])
    p1 = again.partition("t", 1)
    assert [r.value for r in await p1.fetch_records(1, 10)] == [b"acked"]  # on the pool
    assert (await p1.append_records([RecordInput(None, b"after")])).base_offset == 2
    await again.close()


async def test_a_use_takes_the_place_of_a_recovery_not_begun_and_waits_for_one_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copies = await crashed_copies(tmp_path, 2)
    again = TopicManager.open(copies[0], config())  # not started: no background
    p1 = again.partition("t", 1)
    recovery = p1.begin_recovery()
    assert recovery is not None
    assert p1.high_watermark == 2  # before the pool ran it: the use opens the log itself
    assert recovery.cancelled()
    p1.recover_into(recovery)  # (nothing to do)
    p1.end_recovery(recovery)
    assert p1.is_open
    await again.close()

    overlapped = watch_log_opens(monkeypatch)
    again = TopicManager.open(copies[1], config())
    p1 = again.partition("t", 1)
    recovery = p1.begin_recovery()
    assert recovery is not None
    worker = threading.Thread(target=p1.recover_into, args=(recovery,))
    worker.start()
    while not recovery.running() and not recovery.done():
        time.sleep(0.001)
    assert p1.high_watermark == 2  # under way: waited for, then the log opened
    worker.join()
    assert overlapped == [] and p1.is_open
    p1.end_recovery(recovery)
    assert p1.is_open
    await again.close()


async def test_a_clean_stop_before_the_background_is_done_keeps_every_record(
    tmp_path: Path,
) -> None:
    copies = await crashed_copies(tmp_path, 1)
    again = open_manager(copies[0])
    assert again.partition("t", 1).recovering
    await again.close()  # before the background ran: no summary of that partition
    again = open_manager(copies[0])
    p1 = again.partition("t", 1)
    assert p1.recovering
    assert [r.value for r in await p1.fetch_records(0, 10)] == [b"kept", b"acked"]
    await again.close()


async def test_retention_opens_a_closed_log_only_when_it_has_something_to_delete(
    tmp_path: Path,
) -> None:
    manager = open_manager(tmp_path)
    await manager.create("t", 1, {"retention.ms": "1000", "segment.bytes": "100"})
    partition = manager.partition("t", 0)
    for i in range(3):
        await partition.append_records([RecordInput(None, b"x" * 50)], now_ms=1000 + i)
    await manager.close()

    manager = open_manager(tmp_path)
    partition = manager.partition("t", 0)
    assert manager.enforce_retention(1500) == 0
    assert not partition.is_open
    assert manager.enforce_retention(10_000) > 0
    assert partition.is_open
    assert partition.log_start_offset > 0
    await manager.close()


async def test_idle_logs_are_closed_and_reopened_on_use(tmp_path: Path) -> None:
    manager = open_manager(tmp_path)
    await manager.create("t", 2)
    busy, idle = manager.get("t").partitions
    await busy.append_records([RecordInput(None, b"a")])
    await idle.append_records([RecordInput(None, b"b")])
    assert await manager.unload_idle() == 0  # the first pass only notes what each did
    await busy.append_records([RecordInput(None, b"c")])
    waiting = asyncio.create_task(idle.wait_for_data(1, 30))  # a long poll at the end
    await asyncio.sleep(0)
    assert await manager.unload_idle() == 1  # busy wrote since the last pass
    assert busy.is_open and not idle.is_open
    fsyncs = busy.fsyncs
    assert fsyncs >= 2  # one per acknowledged append (fsync always)
    assert await manager.unload_idle() == 1
    assert not busy.is_open
    assert busy.fsyncs == fsyncs  # the counter outlives the log it counted
    assert (busy.high_watermark, idle.high_watermark) == (2, 1)
    assert [r.value for r in await busy.fetch_records(0, 10)] == [b"a", b"c"]
    assert not waiting.done()
    assert (await idle.append_records([RecordInput(None, b"d")])).base_offset == 1
    assert await waiting  # the append to the reopened log woke the long poll
    await manager.close()


async def test_the_catalogue_is_a_journal_that_survives_a_crash(tmp_path: Path) -> None:
    manager = open_manager(tmp_path)
    for i in range(50):
        await manager.create(f"t{i}", 2)
    await manager.delete("t7")
    await manager.add_partitions("t8", 4)
    await manager.alter_configs("t9", {"retention.ms": "5000"})
    snapshot = (tmp_path / "topics.json").read_bytes()
    crash = tmp_path.with_name(tmp_path.name + "-crash")
    shutil.copytree(tmp_path, crash)
    await manager.close()
    assert len(snapshot) < 200  # the snapshot was not rewritten for each change

    again = open_manager(crash)
    assert len(again.list()) == 49 and again.find("t7") is None
    assert again.get("t8").partition_count == 4
    assert again.get("t9").config.retention_ms == 5000
    await again.create("t7", 1)
    await again.close()


async def test_at_most_the_limit_of_logs_stay_open_the_least_recently_used_closing(
    tmp_path: Path,
) -> None:
    manager = open_manager(tmp_path, config(open_partition_logs=3))
    await manager.create("t", 6)
    partitions = manager.get("t").partitions

    async def settled() -> list[Partition]:
        while sum(p.is_open for p in partitions) > 3 or manager._evicting is not None:
            await asyncio.sleep(0.001)
        return [p for p in partitions if p.is_open]

    for partition in partitions:
        await partition.append_records([RecordInput(None, b"v%d" % partition.index)])
    assert len(await settled()) == 3
    for partition in partitions:  # every one still answers, reopening its log as needed
        assert [r.value for r in await partition.fetch_records(0, 10)] == [
            b"v%d" % partition.index
        ]
    # Second chance: of the open logs, the one read since the hand last passed is kept.
    first, *others = await settled()
    for partition in (first, *others):
        partition.used = False
    await first.fetch(0, 100)
    closed = next(p for p in partitions if not p.is_open)
    await closed.fetch(0, 100)  # opens a fourth log: one must go
    still_open = await settled()
    assert first in still_open and closed in still_open
    await manager.close()
    assert len(list(tmp_path.glob("topics/t-*"))) == 6


async def test_after_a_crash_the_background_leaves_no_log_open(
    tmp_path: Path,
) -> None:
    manager = open_manager(tmp_path, config(open_partition_logs=2))
    await manager.create("t", 8)
    for partition in manager.get("t").partitions:
        await partition.append_records([RecordInput(None, b"acked")])
    crash = tmp_path.with_name(tmp_path.name + "-crash")
    shutil.copytree(tmp_path, crash)  # no clean close: no summaries
    await manager.close()

    again = open_manager(crash, config(open_partition_logs=2))
    partitions = again.get("t").partitions
    assert all(p.recovering for p in partitions)
    recovered = asyncio.ensure_future(again.recovered())
    most = 0
    while not recovered.done():
        most = max(most, sum(p.is_open for p in partitions))
        await asyncio.sleep(0)
    assert most == 0  # each log is closed again on the pool, in the job that opened it
    assert not any(p.recovering for p in partitions)
    assert [p.high_watermark for p in partitions] == [1] * 8
    for partition in partitions:
        assert [r.value for r in await partition.fetch_records(0, 10)] == [b"acked"]
    await again.close()


async def test_a_log_is_opened_once_for_concurrent_and_cancelled_callers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager = open_manager(tmp_path)
    await manager.create("t", 1)
    await manager.partition("t", 0).append_records([RecordInput(None, b"v")])
    await manager.close()
    manager = open_manager(tmp_path)
    partition = manager.partition("t", 0)
    opens: list[object] = []
    gate = threading.Event()
    real_open = Log.open

    def gated_open(cls: type[Log], *args: object, **kwargs: object) -> Log:
        opens.append(args[0])
        assert gate.wait(30)
        return real_open(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Log, "open", classmethod(gated_open))
    first = asyncio.create_task(partition.fetch_records(0, 10))
    while not opens:
        await asyncio.sleep(0.001)
    first.cancel()  # its connection went away while the log opened
    with pytest.raises(asyncio.CancelledError):
        await first
    second = asyncio.create_task(partition.fetch_records(0, 10))
    third = asyncio.create_task(partition.append_records([RecordInput(None, b"w")]))
    await asyncio.sleep(0.01)
    gate.set()
    assert [r.value for r in await second] == [b"v"]
    assert (await third).base_offset == 1
    assert len(opens) == 1
    await manager.close()


async def test_a_burst_of_first_records_waits_for_the_eviction_to_keep_up(
    tmp_path: Path,
) -> None:
    manager = open_manager(tmp_path, config(open_partition_logs=2))
    most = 0
    opened = manager._opened

    def counting(partition: Partition) -> None:
        nonlocal most
        opened(partition)
        most = max(most, sum(p.is_open for p in partitions))

    manager._opened = counting  # type: ignore[method-assign]  # before the partitions exist
    await manager.create("t", 12)
    partitions = manager.get("t").partitions
    results = await asyncio.gather(
        *(p.append_records([RecordInput(None, b"v%d" % p.index)]) for p in partitions)
    )
    assert [r.base_offset for r in results] == [0] * 12
    assert 2 < most <= 4  # past the limit for a moment, twice it at most
    for partition in partitions:
        assert [r.value for r in await partition.fetch_records(0, 10)] == [
            b"v%d" % partition.index
        ]
    await manager.close()


async def test_a_catalogue_from_before_the_journal_is_read_and_kept_up_to_date(
    tmp_path: Path,
) -> None:
    old = {
        "version": 1,
        "topics": [
            {"name": "events", "id": "5f0c6c52-8f4e-4f7e-9a51-0f6f0d6f3a11", "partitions": 2,
             "configs": {"retention.ms": "1000"}},
        ],
    }
    (tmp_path / "topics.json").write_text(json.dumps(old))
    manager = open_manager(tmp_path)
    events = manager.get("events")
    assert str(events.topic_id) == "5f0c6c52-8f4e-4f7e-9a51-0f6f0d6f3a11"
    assert events.partition_count == 2 and events.config.retention_ms == 1000
    await manager.create("later", 1)
    await manager.close()
    manager = open_manager(tmp_path)
    assert [t.name for t in manager.list()] == ["events", "later"]
    await manager.close()
