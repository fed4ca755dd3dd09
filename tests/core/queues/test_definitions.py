"""The definitions journal: group commit (changes recorded while a write runs share the next),
a failed write fails its waiters and the next one compacts, replay over the snapshot, a torn
tail, compaction crash-safe at every step, and the upgrade from a definitions.json alone."""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from collections.abc import Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from queue_helpers import Opener

from wharf.core import snapshot_journal
from wharf.core.disk_pool import DiskPool
from wharf.core.queues import definitions
from wharf.core.queues.definitions import (
    FILE_NAME,
    DefinitionsJournal,
    encode_arguments,
    journal_path,
    load_definitions,
)
from wharf.errors import StorageError
from wharf.storage.journal import JournalFile, encode_record, read_journal


@pytest.fixture(params=["broker pool", "standard pool"])
def pool(request: pytest.FixtureRequest) -> Iterator[Executor]:
    """One thread: the broker's kind of pool, or the standard library's (any executor
    works)."""
    executor: Executor = (
        DiskPool(1, "journal-test") if request.param == "broker pool" else ThreadPoolExecutor(1)
    )
    yield executor
    executor.shutdown(wait=True)


def block(pool: Executor) -> threading.Event:
    """Hold the pool's one thread until the returned event is set."""
    gate = threading.Event()
    pool.submit(partial(gate.wait, 30))
    return gate


def normal(data: dict[str, Any] | None) -> dict[str, Any]:
    """``data`` with its lists in a fixed order and without the journal generation."""
    assert data is not None
    return {
        key: sorted(value, key=lambda e: json.dumps(e, sort_keys=True))
        if isinstance(value, list)
        else value
        for key, value in data.items()
        if key != "journal"
    }


async def opened(directory: Path, state: dict[str, Any], **kwargs: Any) -> DefinitionsJournal:
    """A journal on ``directory`` whose snapshots are ``state`` as it is then."""
    journal = DefinitionsJournal(directory, lambda: json.loads(json.dumps(state)), **kwargs)
    assert journal.open() is None  # fresh
    journal.record({"op": "vhost", "name": "/"})
    await journal.wait_durable()  # the first snapshot
    return journal


async def test_changes_recorded_while_a_write_runs_share_the_next_write(
    tmp_path: Path, pool: Executor
) -> None:
    state: dict[str, Any] = {"vhosts": [{"name": "/"}]}
    journal = DefinitionsJournal(tmp_path, lambda: dict(state), pool)
    assert journal.open() is None
    await journal.wait_durable()  # nothing recorded: no write
    assert journal.writes == 0 and journal.compactions == 0
    journal.record({"op": "vhost", "name": "/"})
    await journal.wait_durable()  # the first save writes the snapshot
    assert journal.compactions == 1
    gate = block(pool)
    journal.record({"op": "vhost", "name": "a"})
    first = asyncio.create_task(journal.wait_durable())
    await asyncio.sleep(0.01)  # the first write took its records and waits for the pool
    later = []
    for name in ("b", "c", "d"):
        journal.record({"op": "vhost", "name": name})
        later.append(asyncio.create_task(journal.wait_durable()))
    await asyncio.sleep(0.01)
    assert not first.done() and not any(task.done() for task in later)
    gate.set()
    await asyncio.gather(first, *later)
    assert journal.writes == 2
    await journal.close()
    saved = load_definitions(tmp_path)
    assert saved is not None
    assert [v["name"] for v in saved["vhosts"]] == ["/", "a", "b", "c", "d"]


async def test_a_failed_write_fails_its_waiters_and_the_next_save_compacts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    state: dict[str, Any] = {"vhosts": [{"name": "/"}]}
    journal = await opened(tmp_path, state)
    generation = 1

    def failing_sync(file: JournalFile) -> None:
        raise StorageError("disk gone")

    monkeypatch.setattr(JournalFile, "sync", failing_sync)
    state["vhosts"].append({"name": "a"})
    journal.record({"op": "vhost", "name": "a"})
    results = await asyncio.gather(journal.wait_durable(), journal.wait_durable(),
                                   return_exceptions=True)  # fmt: skip
    assert all(isinstance(result, StorageError) for result in results)
    monkeypatch.undo()
    state["vhosts"].append({"name": "b"})
    journal.record({"op": "vhost", "name": "b"})
    await journal.wait_durable()  # a snapshot: the failed write's pages may be lost
    assert journal.compactions == 2 and journal.writes == 0
    await journal.close()
    assert not journal_path(tmp_path, generation).exists()
    assert normal(load_definitions(tmp_path)) == normal(state)


async def test_close_waits_for_the_write_under_way(
    tmp_path: Path, pool: Executor
) -> None:
    journal = DefinitionsJournal(tmp_path, lambda: {"vhosts": []}, pool)
    assert journal.open() is None
    journal.record({"op": "vhost", "name": "/"})
    gate = block(pool)
    save = asyncio.create_task(journal.wait_durable())
    await asyncio.sleep(0)
    closing = asyncio.create_task(journal.close())
    await asyncio.sleep(0.01)
    assert not closing.done()
    gate.set()
    await closing
    assert save.done() and journal.compactions == 1


async def test_a_write_goes_on_when_everyone_waiting_for_it_went_away(
    tmp_path: Path, pool: Executor
) -> None:
    journal = DefinitionsJournal(tmp_path, lambda: {"vhosts": [{"name": "/"}]}, pool)
    assert journal.open() is None
    journal.record({"op": "vhost", "name": "/"})
    await journal.wait_durable()  # the first snapshot
    gate = block(pool)
    journal.record({"op": "vhost", "name": "a"})
    waiter = asyncio.create_task(journal.wait_durable())
    await asyncio.sleep(0.01)  # the write took the record and waits for the pool
    waiter.cancel()  # its connection went away
    await asyncio.sleep(0)
    gate.set()
    await journal.close()  # waits for that write
    assert waiter.cancelled() and journal.writes == 1
    saved = load_definitions(tmp_path)
    assert saved is not None and [v["name"] for v in saved["vhosts"]] == ["/", "a"]


async def test_a_save_the_pool_refuses_fails_its_waiters_instead_of_hanging(
    tmp_path: Path,
) -> None:
    pool = DiskPool(1, "journal-test")
    journal = DefinitionsJournal(tmp_path, lambda: {"vhosts": [{"name": "/"}]}, pool)
    assert journal.open() is None
    journal.record({"op": "vhost", "name": "/"})
    await journal.wait_durable()  # the first snapshot
    pool.shutdown(wait=True)  # as at the end of a broker's close
    journal.record({"op": "vhost", "name": "a"})
    with pytest.raises(RuntimeError):
        await asyncio.wait_for(journal.wait_durable(), 10)
    await asyncio.wait_for(journal.close(), 10)


@pytest.mark.parametrize(
    "name",
    ["plain", "é-ü 東京", "lone \udc80 surrogate", "big"],
    ids=["ascii", "utf8", "surrogate", "big-int"],
)
def test_a_snapshot_is_indented_json_with_sorted_keys_that_reads_back_the_same(
    name: str,
) -> None:
    data: dict[str, Any] = {
        "vhosts": [{"name": "/"}],
        "queues": [{"vhost": "/", "name": name, "durable": True, "arguments": {}}],
        "journal": 2,
    }
    if name == "big":
        data["journal"] = 1 << 70  # beyond 64 bits: the standard encoder writes it
    encoded = snapshot_journal.encode_snapshot(data)
    assert json.loads(encoded) == data
    assert encoded.startswith(b'{\n "journal": ') and b'\n  {\n   "arguments": {},' in encoded


async def test_a_torn_tail_is_cut_off_and_every_record_before_it_replayed(
    tmp_path: Path,
) -> None:
    journal = await opened(tmp_path, {"vhosts": [{"name": "/"}]})
    for name in ("a", "b"):
        journal.record({"op": "vhost", "name": name})
        await journal.wait_durable()
    await journal.close()
    path = journal_path(tmp_path, 1)
    whole = sum(len(encode_record(payload)) for payload in read_journal(path))
    with path.open("r+b") as f:  # mid-write, into the zeros allocated ahead
        f.seek(whole)
        f.write(encode_record(b'{"op":"vhost","name":"c"}')[:-3])
    again = DefinitionsJournal(tmp_path, dict)
    loaded = again.open()
    assert loaded is not None and [v["name"] for v in loaded["vhosts"]] == ["/", "a", "b"]
    assert path.stat().st_size == whole
    again.record({"op": "vhost", "name": "d"})
    await again.wait_durable()
    await again.close()
    saved = load_definitions(tmp_path)
    assert saved is not None and [v["name"] for v in saved["vhosts"]] == ["/", "a", "b", "d"]


async def test_replay_drops_bindings_with_their_queue_exchange_or_vhost(tmp_path: Path) -> None:
    journal = await opened(tmp_path, {"vhosts": [{"name": "/"}]})

    def binding(source: str, dest: str, kind: str, args: dict[str, Any]) -> dict[str, Any]:
        return {"vhost": "/", "source": source, "destination": dest, "destination_type": kind,
                "routing_key": "k", "arguments": encode_arguments(args)}  # fmt: skip

    def exchange(vhost: str, name: str) -> dict[str, Any]:
        return {"op": "exchange", "vhost": vhost, "name": name, "type": "direct",
                "durable": True, "auto_delete": False, "internal": False,
                "arguments": encode_arguments({})}  # fmt: skip

    def queue(vhost: str, name: str) -> dict[str, Any]:
        return {"op": "queue", "vhost": vhost, "name": name, "durable": True,
                "auto_delete": False, "arguments": encode_arguments({})}  # fmt: skip

    for change in (
        {"op": "vhost", "name": "v"},
        exchange("/", "e"),
        exchange("/", "f"),
        exchange("v", "e"),
        queue("/", "q"),
        queue("/", "r"),
        queue("v", "q"),
        {"op": "bind", **binding("e", "q", "queue", {})},
        {"op": "bind", **binding("e", "r", "queue", {"a": 1, "b": "x"})},
        {"op": "bind", **binding("f", "e", "exchange", {})},
        {"op": "bind", **binding("f", "r", "queue", {})},
        # the same table in another order is the same binding
        {"op": "unbind", **binding("e", "r", "queue", {"b": "x", "a": 1})},
        {"op": "queue.delete", "vhost": "/", "name": "q"},
        {"op": "exchange.delete", "vhost": "/", "name": "e"},
        {"op": "vhost.delete", "name": "v"},
        {"op": "users", "users": [{"name": "bob"}], "permissions": []},
    ):
        journal.record(change)
    await journal.wait_durable()
    await journal.close()
    saved = load_definitions(tmp_path)
    assert saved is not None
    assert [v["name"] for v in saved["vhosts"]] == ["/"]
    assert [(e["vhost"], e["name"]) for e in saved["exchanges"]] == [("/", "f")]
    assert [(q["vhost"], q["name"]) for q in saved["queues"]] == [("/", "r")]
    assert [(b["source"], b["destination"]) for b in saved["bindings"]] == [("f", "r")]
    assert saved["users"] == [{"name": "bob"}] and saved["permissions"] == []


async def topology(open_registry: Opener) -> None:
    """Declare, bind, unbind and delete some durable things, restarting in between."""
    registry = await open_registry()
    vhost = registry["/"]
    await registry.create("other")
    for i in range(30):
        await vhost.declare_queue(f"q{i}", durable=True, arguments={"x-max-priority": i % 5})
        await vhost.declare_exchange(f"e{i % 7}", "topic")
        await vhost.bind_queue(f"q{i}", f"e{i % 7}", f"k.{i}", {"x": i})
    await vhost.declare_queue("transient")
    await vhost.declare_queue("naïve-ü-☃", durable=True)
    await vhost.bind_exchange("e1", "e2", "#")
    registry = await open_registry()
    vhost = registry["/"]
    for i in range(0, 30, 3):
        await vhost.delete_queue(f"q{i}")
    await vhost.unbind_queue("q1", "e1", "k.1", {"x": 1})
    await vhost.delete_exchange("e3")
    await registry.delete("other")


async def test_a_restart_restores_what_the_journal_holds(open_registry: Opener) -> None:
    await topology(open_registry)
    registry = await open_registry()
    live = normal(registry._to_json())
    vhost = registry["/"]
    assert sorted(vhost.queues) == sorted([f"q{i}" for i in range(30) if i % 3] + ["naïve-ü-☃"])
    assert "e3" not in vhost.exchanges and "other" not in registry
    assert vhost.queues["q4"].arguments == {"x-max-priority": 4}
    assert live == normal(load_definitions(registry.path))
    assert registry.definitions.compactions == 0  # all of it replayed from the journal
    await open_registry()
    assert normal(load_definitions(registry.path)) == live


async def test_compaction_is_crash_safe_at_every_step(
    open_registry: Opener, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every compaction, the directory as a crash would leave it: before it began, once the new
    # journal exists, once the new snapshot is renamed in (the old journal not yet deleted).
    monkeypatch.setattr(definitions, "COMPACT_MIN_BYTES", 0)  # compact whenever it may
    steps: list[dict[str, Any]] = []
    real_create = JournalFile.create
    real_replace = snapshot_journal.replace_file

    def copy(directory: Path, step: str) -> Path:
        target = tmp_path / f"{step}-{len(steps)}"
        shutil.copytree(directory, target, ignore=shutil.ignore_patterns("vhosts"))
        return target

    def create(cls: type[JournalFile], path: Path) -> JournalFile:
        steps.append({"began": copy(path.parent, "began")})
        return real_create(path)

    def replace_file(path: Path, payload: bytes, *, mode: int) -> None:
        steps[-1]["created"] = copy(path.parent, "created")
        real_replace(path, payload, mode=mode)
        steps[-1]["renamed"] = copy(path.parent, "renamed")
        steps[-1]["snapshot"] = json.loads(payload)

    monkeypatch.setattr(JournalFile, "create", classmethod(create))
    monkeypatch.setattr(snapshot_journal, "replace_file", replace_file)
    await topology(open_registry)
    assert len(steps) > 3
    for step in steps:
        began = load_definitions(step["began"])
        for directory, expected in ((step["created"], began), (step["renamed"], step["snapshot"])):
            journal = DefinitionsJournal(directory, dict)
            if expected is None:  # the first snapshot of a fresh directory
                assert journal.open() is None
                continue
            assert normal(journal.open()) == normal(expected)
            await journal.close()
            generation = expected.get("journal", step["snapshot"]["journal"] - 1)
            journals = [p.name for p in directory.glob("*.journal")]
            assert journals == [f"definitions.{generation}.journal"]  # strays deleted
    registry = await open_registry()
    assert normal(load_definitions(registry.path)) == normal(registry._to_json())


async def test_a_definitions_file_from_before_the_journal_is_read_and_kept_up_to_date(
    open_registry: Opener, tmp_path: Path
) -> None:
    directory = tmp_path / "q"
    directory.mkdir()
    old = {
        "users": [{"name": "guest", "password_hash": "x", "tags": ["administrator"],
                   "loopback_only": True}],
        "permissions": [{"user": "guest", "vhost": "/", "configure": ".*", "write": ".*",
                         "read": ".*"}],
        "vhosts": [{"name": "/"}],
        "exchanges": [{"vhost": "/", "name": "logs", "type": "fanout", "durable": True,
                       "auto_delete": False, "internal": False,
                       "arguments": encode_arguments({})}],
        "queues": [{"vhost": "/", "name": "tasks", "durable": True, "auto_delete": False,
                    "arguments": encode_arguments({"x-max-length": 10})}],
        "bindings": [{"vhost": "/", "source": "logs", "destination": "tasks",
                      "destination_type": "queue", "routing_key": "",
                      "arguments": encode_arguments({})}],
    }  # fmt: skip
    (directory / FILE_NAME).write_text(json.dumps(old, indent=1, sort_keys=True))
    registry = await open_registry()
    vhost = registry["/"]
    assert vhost.queues["tasks"].arguments == {"x-max-length": 10}
    assert [b.destination for b in vhost.exchanges["logs"].bindings] == ["tasks"]
    await vhost.declare_queue("more", durable=True)
    assert json.loads((directory / FILE_NAME).read_text()) == old  # the snapshot stays
    registry = await open_registry()
    assert sorted(registry["/"].queues) == ["more", "tasks"]
    assert sorted(p.name for p in directory.glob("*.journal")) == ["definitions.0.journal"]


async def test_a_name_with_a_lone_surrogate_is_journaled_and_restored(
    open_registry: Opener,
) -> None:
    registry = await open_registry()
    name = "odd-\udcff-name"  # the standard encoder escapes it; msgspec refuses the escape
    await registry["/"].declare_exchange(name, "direct", durable=True)
    registry = await open_registry()
    assert name in registry["/"].exchanges
    await registry.save()  # into the snapshot, and read back from it
    registry = await open_registry()
    assert name in registry["/"].exchanges
