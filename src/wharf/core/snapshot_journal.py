"""A JSON snapshot plus a journal of the changes made since: saving a change costs the same
however much state there is. The AMQP definitions and the topic catalogue are saved this way.

Files, in one directory, for a store named ``NAME``:

* ``NAME.json``: the snapshot, a JSON object whose ``"journal"`` key names the generation of
  the journal that goes with it (a file without that key, written before journals existed, is
  generation 0).
* ``NAME.<generation>.journal``: one record (:mod:`wharf.storage.journal` framing) per change
  made after that snapshot, a compact JSON object; what the records mean is the owner's
  business (its ``replay`` function applies them, in order, to the snapshot).

Loading (:meth:`SnapshotJournal.open`) reads the snapshot, replays its generation's journal
(cutting off a torn tail: the change being written when the process died, which nobody was told
was saved) and deletes the journals of other generations, left by a crash during compaction.

How saving works: a change calls :meth:`SnapshotJournal.record` on the event-loop thread in the
same step that changes the state in memory, which encodes the record into a pending list, then
awaits :meth:`SnapshotJournal.wait_durable`. One write at a time takes everything pending,
appends it and fdatasyncs it on the broker's fsync pool, and its completion (a callback on the
event-loop thread, with no task between the pool and the waiters: each step between is an
event-loop iteration a sequential client waits for) releases the waiters it covered and starts
the next write if changes were recorded meanwhile: those share it (group commit). So an answer
sent after the wait means the change is on disk. A write runs to its end even when every
waiter went away.

Compaction: when the journal has grown past the snapshot's size (and at least
``compact_min_bytes``), or after a failed write (whose pages the kernel may have dropped), the
writer instead takes a snapshot of the live state on the event-loop thread (so it holds every
change recorded so far, and the pending records are dropped), and on the pool: creates the next
generation's empty journal (fsyncing the directory), replaces the snapshot file with the
snapshot naming that generation (temporary file, fsync, rename, directory fsync), then deletes
the old journal. A crash before the rename leaves the old snapshot and journal in charge (the
new journal is a stray, deleted at load); after it, the new ones. Records appended while the
compaction runs wait for it, then go to the journal in charge.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial
from pathlib import Path
from typing import Any

import msgspec

from wharf.core.durability import run_off_loop, start_off_loop
from wharf.errors import StorageError
from wharf.storage.checkpoint import replace_file
from wharf.storage.journal import JournalFile, encode_record, read_journal

__all__ = [
    "JOURNAL_KEY",
    "Replay",
    "SnapshotJournal",
    "encode_snapshot",
    "journal_path",
    "load_snapshot",
]

JOURNAL_KEY = "journal"

State = dict[str, Any]
# Applies journal records (decoded JSON objects, in order) to a snapshot; returns the state.
Replay = Callable[[State, list[State]], State]


def encode_snapshot(data: State) -> bytes:
    """The content of a snapshot file for ``data``: indented JSON, keys sorted.

    Encoded by msgspec: the standard library's encoder took 686 ms for the definitions of
    50,000 queues, 12,500 exchanges and 50,000 bindings (15 MB), msgspec 47 ms, and either
    holds the GIL throughout, starving the event loop while a compaction runs on the pool.
    What msgspec refuses (a name holding a lone surrogate, which it cannot write as UTF-8; an
    integer beyond 64 bits) goes through the standard encoder, which escapes or writes it."""
    try:
        return msgspec.json.format(msgspec.json.encode(data, order="sorted"), indent=1)
    except (UnicodeEncodeError, OverflowError, TypeError):
        return json.dumps(data, indent=1, sort_keys=True).encode("utf-8")


def journal_path(directory: Path, name: str, generation: int) -> Path:
    return directory / f"{name}.{generation}.journal"


def _decode(raw: bytes) -> Any:
    """JSON as written here, decoded by msgspec (a few times quicker than the standard
    library: 50,000 queues' definitions took 0.3 s of a restart) or, for what it refuses (a
    name holding a lone surrogate, which the standard encoder escapes), by the standard
    decoder; raises ValueError for anything else."""
    try:
        return msgspec.json.decode(raw)
    except msgspec.DecodeError:
        return json.loads(raw)


def _read_snapshot(directory: Path, name: str) -> State | None:
    path = directory / f"{name}.json"
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read {path}: {exc}", errno=exc.errno) from exc
    try:
        data = _decode(raw)
    except ValueError as exc:
        raise StorageError(f"{path} is damaged: {exc}") from exc
    if not isinstance(data, dict):
        raise StorageError(f"{path} is damaged")
    return data


def _replay(data: State, payloads: list[bytes], replay: Replay, name: str) -> State:
    if not payloads:
        data.pop(JOURNAL_KEY, None)
        return data
    changes: list[State] = []
    for payload in payloads:
        try:
            changes.append(_decode(payload))
        except ValueError as exc:
            raise StorageError(f"{name} journal record is damaged: {exc}") from exc
    return replay(data, changes)


def load_snapshot(directory: Path, name: str, replay: Replay) -> State | None:
    """The saved state (snapshot and journal), or None when there is no snapshot; changes
    nothing on disk."""
    data = _read_snapshot(directory, name)
    if data is None:
        return None
    generation = int(data.get(JOURNAL_KEY, 0))
    return _replay(data, read_journal(journal_path(directory, name, generation)), replay, name)


class SnapshotJournal:
    """Saves changes as journal records; see the module docstring.

    ``snapshot`` returns the state as it is now (called on the event-loop thread, for
    compactions); ``executor`` runs the disk work (the loop's default pool when None)."""

    def __init__(
        self,
        directory: Path,
        name: str,
        snapshot: Callable[[], State],
        replay: Replay,
        executor: Executor | None = None,
        *,
        compact_min_bytes: int,
        mode: int = 0o644,
    ) -> None:
        self._directory = directory
        self._name = name
        self._snapshot = snapshot
        self._apply = replay
        self._executor = executor
        self._compact_min_bytes = compact_min_bytes
        self._mode = mode
        self._stray = re.compile(re.escape(name) + r"\.(\d+)\.journal")
        self._file: JournalFile | None = None  # None until opened or first compacted
        self._generation = 0
        self._snapshot_bytes = 0
        self._pending: list[bytes] = []  # encoded records not yet written
        self._failed = False  # the last write failed: compact next
        self._recorded = 0  # changes recorded
        self._durable = 0  # every change up to this one is on disk
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._busy = False  # a write or compaction is under way
        self._quiet: asyncio.Future[None] | None = None  # set once none is (for close)
        self._compaction: asyncio.Task[None] | None = None
        self.writes = 0  # completed journal writes, for tests and benchmarks
        self.compactions = 0  # completed compactions

    def open(self) -> State | None:
        """Load the state (see the module docstring); None for a fresh directory, whose first
        save writes a snapshot. Blocks on the disk: run it on the fsync pool."""
        self._directory.mkdir(parents=True, exist_ok=True)
        data = _read_snapshot(self._directory, self._name)
        if data is None:
            return None
        generation = int(data.get(JOURNAL_KEY, 0))
        self._file, payloads = JournalFile.open(self._journal(generation))
        self._generation = generation
        self._snapshot_bytes = (self._directory / f"{self._name}.json").stat().st_size
        for stray in self._directory.iterdir():
            found = self._stray.fullmatch(stray.name)
            if found is not None and int(found.group(1)) != generation:
                stray.unlink()
        return _replay(data, payloads, self._apply, self._name)

    def record(self, change: State) -> None:
        """Count a change made in memory (on the event-loop thread, in the same step)."""
        encoded = json.dumps(change, separators=(",", ":"))  # ASCII: any str encodes
        self._pending.append(encode_record(encoded.encode("ascii")))
        self._recorded += 1

    async def wait_durable(self) -> None:
        """Return once every change recorded so far is on disk (at once when it is); raises
        StorageError when the write meant to carry one failed."""
        change = self._recorded
        if change <= self._durable:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((change, future))
        if not self._busy:
            self._next()
        await future

    async def close(self) -> None:
        """Wait for a running write (and the ones queued behind it), then close the file."""
        while self._busy:
            if self._quiet is None:
                self._quiet = asyncio.get_running_loop().create_future()
            await asyncio.shield(self._quiet)
        if self._file is not None:
            self._file.close()
            self._file = None

    def _journal(self, generation: int) -> Path:
        return journal_path(self._directory, self._name, generation)

    def _next(self) -> None:
        """Start the next write (or compaction) for the waiters, or note that none is due."""
        if not self._waiters:
            self._busy = False
            if self._quiet is not None:
                self._quiet.set_result(None)
                self._quiet = None
            return
        self._busy = True
        covers = self._recorded
        if self._file is None or self._failed or self._due_for_compaction():
            self._compaction = asyncio.get_running_loop().create_task(self._compact())
            self._compaction.add_done_callback(partial(self._compacted, covers))
            return
        file, batch = self._file, b"".join(self._pending)
        self._pending = []

        def write() -> None:
            file.append(batch)
            file.sync()

        try:
            start_off_loop(self._executor, write, partial(self._written, covers))
        except Exception as exc:  # the pool refused it (shut down): fail these waiters
            self._finished(covers, exc)

    def _written(self, covers: int, _: None, error: BaseException | None) -> None:
        if error is None:
            self.writes += 1
        self._finished(covers, error)

    def _compacted(self, covers: int, task: asyncio.Task[None]) -> None:
        self._compaction = None
        self._finished(covers, None if task.cancelled() else task.exception())

    def _finished(self, covers: int, error: BaseException | None) -> None:
        """A write or compaction covering the changes up to ``covers`` ended."""
        if error is None:
            self._durable = max(self._durable, covers)
        else:  # every failure must reach its waiters, or they hang
            self._failed = True
            if not isinstance(error, Exception):
                error = StorageError(f"the {self._name} journal write was interrupted: {error!r}")
        self._settle(covers, error)
        self._next()

    def _due_for_compaction(self) -> bool:
        assert self._file is not None
        return self._file.size > max(self._compact_min_bytes, self._snapshot_bytes)

    async def _compact(self) -> None:
        generation = self._generation + 1
        data = self._snapshot()
        data[JOURNAL_KEY] = generation
        self._pending = []  # the snapshot holds them
        old = self._file
        new, size = await run_off_loop(
            self._executor, partial(self._write_snapshot, generation, data, old)
        )
        self._file = new
        self._generation = generation
        self._snapshot_bytes = size
        self._failed = False
        self.compactions += 1

    def _write_snapshot(
        self, generation: int, data: State, old: JournalFile | None
    ) -> tuple[JournalFile, int]:
        """On the pool: new journal, snapshot naming it, old journal gone (in that order)."""
        payload = encode_snapshot(data)
        new = JournalFile.create(self._journal(generation))
        try:
            replace_file(self._directory / f"{self._name}.json", payload, mode=self._mode)
        except BaseException:
            new.close()
            new.path.unlink(missing_ok=True)
            raise
        if old is not None:
            old.close()
            old.path.unlink(missing_ok=True)
        return new, len(payload)

    def _settle(self, covers: int, error: BaseException | None) -> None:
        pending: list[tuple[int, asyncio.Future[None]]] = []
        for change, future in self._waiters:
            if future.done():
                continue
            if change > covers:
                pending.append((change, future))
            elif error is None:
                future.set_result(None)
            else:
                future.set_exception(error)
        self._waiters = pending
