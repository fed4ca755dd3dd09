"""DefinitionsWriter: saves wait for the disk, changes made during a write share the next one,
a failed write fails the saves it carried and the next save tries again."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from wharf.core.queues.definitions import FILE_NAME, DefinitionsWriter
from wharf.errors import StorageError


@pytest.fixture
def pool() -> Iterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(1)
    yield executor
    executor.shutdown(wait=True)


def block(pool: ThreadPoolExecutor) -> threading.Event:
    """Hold the pool's one thread until the returned event is set."""
    gate = threading.Event()
    pool.submit(gate.wait, 30)
    return gate


def saved(directory: Path) -> Any:
    return json.loads((directory / FILE_NAME).read_text())


async def test_changes_made_while_a_write_runs_share_the_next_write(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    data = {"n": 0}
    writer = DefinitionsWriter(tmp_path, lambda: dict(data), pool)
    gate = block(pool)
    data["n"] = 1
    first = asyncio.create_task(writer.save())
    await asyncio.sleep(0)  # the first write took its snapshot and waits for the pool
    later = []
    for n in (2, 3, 4):
        data["n"] = n
        later.append(asyncio.create_task(writer.save()))
    await asyncio.sleep(0.01)
    assert not first.done() and not any(task.done() for task in later)
    gate.set()
    await asyncio.gather(first, *later)
    assert writer.writes == 2
    assert saved(tmp_path) == {"n": 4}


async def test_a_failed_write_fails_its_saves_and_the_next_save_writes_again(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "not-yet"
    writer = DefinitionsWriter(directory, lambda: {"n": 1})
    results = await asyncio.gather(writer.save(), writer.save(), return_exceptions=True)
    assert all(isinstance(result, StorageError) for result in results)
    assert writer.writes == 0
    directory.mkdir()
    await writer.save()
    assert writer.writes == 1
    assert saved(directory) == {"n": 1}


async def test_wait_saved_waits_only_for_the_saves_under_way(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    writer = DefinitionsWriter(tmp_path, lambda: {"n": 1}, pool)
    await writer.wait_saved()  # nothing pending: no write
    assert writer.writes == 0 and not (tmp_path / FILE_NAME).exists()
    gate = block(pool)
    save = asyncio.create_task(writer.save())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(writer.wait_saved())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    gate.set()
    await asyncio.gather(save, waiting)
    assert writer.writes == 1
    assert saved(tmp_path) == {"n": 1}


async def test_close_waits_for_the_write_under_way(
    tmp_path: Path, pool: ThreadPoolExecutor
) -> None:
    writer = DefinitionsWriter(tmp_path, lambda: {"n": 1}, pool)
    gate = block(pool)
    save = asyncio.create_task(writer.save())
    await asyncio.sleep(0)
    closing = asyncio.create_task(writer.close())
    await asyncio.sleep(0.01)
    assert not closing.done()
    gate.set()
    await closing
    assert save.done() and writer.writes == 1
