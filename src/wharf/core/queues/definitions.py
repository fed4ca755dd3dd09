"""Durable definitions (virtual hosts, users, permissions, durable exchanges, queues and their
bindings): a snapshot in RabbitMQ's definitions-export shape plus a journal of the changes
since, so a change costs the same however many definitions there are.

Files, in the registry's directory:

* ``definitions.json``: the snapshot, ``{"vhosts": [...], "exchanges": [...], "queues": [...],
  "bindings": [...], "users": [...], "permissions": [...], "journal": <generation>}``.
  Argument tables are base64 AMQP field tables, so every value type survives exactly. A file
  without ``"journal"`` (written before the journal existed) is generation 0.
* ``definitions.<generation>.journal``: one record (:mod:`wharf.storage.journal` framing) per
  change made after that snapshot, a compact JSON object with an ``"op"``: ``vhost``,
  ``vhost.delete``, ``exchange``, ``exchange.delete``, ``queue``, ``queue.delete``, ``bind``,
  ``unbind``, ``users``. Each is the new state of one thing (deleting a queue or an exchange
  also drops its bindings, as in memory), so replaying them in order over the snapshot gives
  the definitions as they were.

Loading (:meth:`DefinitionsJournal.open`) reads the snapshot, replays its generation's journal
(cutting off a torn tail: the change being written when the process died, which nobody was told
was saved) and deletes the journals of other generations, left by a crash during compaction.

How saving works: a change calls :meth:`DefinitionsJournal.record` on the event-loop thread in
the same step that changes the definitions in memory, which encodes the record into a pending
list, then awaits :meth:`DefinitionsJournal.wait_durable`. One writer task at a time writes
everything pending and fdatasyncs it on the broker's fsync pool, then releases the waiters that
write covered; changes recorded meanwhile share the next write (group commit). So a declare-ok
means its record is on disk.

Compaction: when the journal has grown past the snapshot's size (and at least
:data:`COMPACT_MIN_BYTES`), or after a failed write (whose pages the kernel may have dropped),
the writer instead takes a snapshot of the live definitions on the event-loop thread (so it
holds every change recorded so far, and the pending records are dropped), and on the pool:
creates the next generation's empty journal (fsyncing the directory), replaces
``definitions.json`` with the snapshot naming that generation (temporary file, fsync, rename,
directory fsync), then deletes the old journal. A crash before the rename leaves the old
snapshot and journal in charge (the new journal is a stray, deleted at load); after it, the new
ones. Records appended while the compaction runs wait for it, then go to the journal in charge.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wharf.core.durability import run_off_loop
from wharf.core.queues import properties as props
from wharf.errors import StorageError
from wharf.storage.checkpoint import replace_file
from wharf.storage.journal import JournalFile, encode_record, read_journal

if TYPE_CHECKING:
    from wharf.core.queues.exchanges import Binding, Exchange
    from wharf.core.queues.queue import Queue

__all__ = [
    "COMPACT_MIN_BYTES",
    "FILE_NAME",
    "DefinitionsJournal",
    "binding_entry",
    "decode_arguments",
    "encode_arguments",
    "encode_definitions",
    "exchange_entry",
    "journal_path",
    "load_definitions",
    "queue_entry",
]

FILE_NAME = "definitions.json"
JOURNAL_KEY = "journal"
# The journal is compacted once larger than the snapshot and than this.
COMPACT_MIN_BYTES = 1 << 20
_JOURNAL_NAME = re.compile(r"definitions\.(\d+)\.journal")
_TOPOLOGY = ("vhosts", "exchanges", "queues", "bindings", JOURNAL_KEY)

Change = dict[str, Any]


def _encodable(value: Any) -> Any:
    if isinstance(value, bytes):
        return bytearray(value)
    if isinstance(value, dict):
        return {k: _encodable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encodable(v) for v in value]
    return value


def encode_arguments(arguments: dict[str, Any]) -> str:
    return base64.b64encode(props.encode_table(_encodable(arguments))).decode("ascii")


def decode_arguments(text: str) -> dict[str, Any]:
    table = props.decode_table(base64.b64decode(text))
    return {k: bytes(v) if isinstance(v, bytearray) else v for k, v in table.items()}


def encode_definitions(data: dict[str, Any]) -> bytes:
    """The content of the snapshot file for ``data``."""
    return json.dumps(data, indent=1, sort_keys=True).encode("utf-8")


def journal_path(directory: Path, generation: int) -> Path:
    return directory / f"definitions.{generation}.journal"


# ------------------------------------------------------------------------------- entries


def exchange_entry(vhost: str, exchange: Exchange) -> dict[str, Any]:
    return {
        "vhost": vhost,
        "name": exchange.name,
        "type": exchange.type.value,
        "durable": True,
        "auto_delete": exchange.auto_delete,
        "internal": exchange.internal,
        "arguments": encode_arguments(exchange.arguments),
    }


def queue_entry(vhost: str, queue: Queue) -> dict[str, Any]:
    return {
        "vhost": vhost,
        "name": queue.name,
        "durable": True,
        "auto_delete": queue.auto_delete,
        "arguments": encode_arguments(queue.arguments),
    }


def binding_entry(vhost: str, binding: Binding) -> dict[str, Any]:
    return {
        "vhost": vhost,
        "source": binding.source,
        "destination": binding.destination,
        "destination_type": binding.kind.value,
        "routing_key": binding.routing_key,
        "arguments": encode_arguments(dict(binding.arguments)),
    }


# -------------------------------------------------------------------------------- replay


class _Definitions:
    """The saved definitions as plain entries, keyed, for replaying journal records."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.other = {k: v for k, v in data.items() if k not in _TOPOLOGY}  # users...
        self.vhosts: dict[str, dict[str, Any]] = {v["name"]: v for v in data.get("vhosts", [])}
        self.exchanges: dict[tuple[str, str], dict[str, Any]] = {}
        self.queues: dict[tuple[str, str], dict[str, Any]] = {}
        self.bindings: dict[tuple[str, ...], dict[str, Any]] = {}
        # binding keys by (vhost, "queue" or "exchange", name) of either end
        self._ends: dict[tuple[str, str, str], set[tuple[str, ...]]] = {}
        for e in data.get("exchanges", []):
            self.exchanges[e["vhost"], e["name"]] = e
        for q in data.get("queues", []):
            self.queues[q["vhost"], q["name"]] = q
        for b in data.get("bindings", []):
            self._bind(b)

    def apply(self, change: Change) -> None:
        op = change.pop("op")
        if op == "vhost":
            self.vhosts.setdefault(change["name"], change)
        elif op == "vhost.delete":
            self._drop_vhost(change["name"])
        elif op == "exchange":
            self.exchanges[change["vhost"], change["name"]] = change
        elif op == "exchange.delete":
            self.exchanges.pop((change["vhost"], change["name"]), None)
            self._unbind_end(change["vhost"], "exchange", change["name"])
        elif op == "queue":
            self.queues[change["vhost"], change["name"]] = change
        elif op == "queue.delete":
            self.queues.pop((change["vhost"], change["name"]), None)
            self._unbind_end(change["vhost"], "queue", change["name"])
        elif op == "bind":
            self._bind(change)
        elif op == "unbind":
            self._unbind(_binding_key(change))
        elif op == "users":
            self.other.update(change)
        else:
            raise StorageError(f"unknown definitions journal record {op!r}")

    def to_json(self) -> dict[str, Any]:
        data = dict(self.other)
        data["vhosts"] = list(self.vhosts.values())
        data["exchanges"] = list(self.exchanges.values())
        data["queues"] = list(self.queues.values())
        data["bindings"] = list(self.bindings.values())
        return data

    def _bind(self, entry: dict[str, Any]) -> None:
        key = _binding_key(entry)
        self.bindings[key] = entry
        vhost = entry["vhost"]
        self._ends.setdefault((vhost, "exchange", entry["source"]), set()).add(key)
        self._ends.setdefault((vhost, entry["destination_type"], entry["destination"]),
                              set()).add(key)  # fmt: skip

    def _unbind(self, key: tuple[str, ...]) -> None:
        entry = self.bindings.pop(key, None)
        if entry is None:
            return
        vhost = entry["vhost"]
        for end in ((vhost, "exchange", entry["source"]),
                    (vhost, entry["destination_type"], entry["destination"])):  # fmt: skip
            keys = self._ends.get(end)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._ends[end]

    def _unbind_end(self, vhost: str, kind: str, name: str) -> None:
        for key in list(self._ends.get((vhost, kind, name), ())):
            self._unbind(key)

    def _drop_vhost(self, vhost: str) -> None:
        self.vhosts.pop(vhost, None)
        for table in (self.exchanges, self.queues):
            for key in [k for k in table if k[0] == vhost]:
                del table[key]
        for binding in [k for k in self.bindings if k[0] == vhost]:
            self._unbind(binding)


def _binding_key(entry: dict[str, Any]) -> tuple[str, ...]:
    # arguments compared as a binding compares them: as a table, whatever their order
    args = repr(sorted(decode_arguments(entry["arguments"]).items()))
    return (entry["vhost"], entry["source"], entry["destination"], entry["destination_type"],
            entry["routing_key"], args)  # fmt: skip


def _read_snapshot(directory: Path) -> dict[str, Any] | None:
    path = directory / FILE_NAME
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read definitions: {exc}", errno=exc.errno) from exc
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise StorageError(f"definitions file {path} is damaged: {exc}") from exc
    if not isinstance(data, dict):
        raise StorageError(f"definitions file {path} is damaged")
    return data


def _replay(data: dict[str, Any], payloads: list[bytes]) -> dict[str, Any]:
    if not payloads:
        data.pop(JOURNAL_KEY, None)
        return data
    state = _Definitions(data)
    for payload in payloads:
        try:
            change = json.loads(payload)
        except ValueError as exc:
            raise StorageError(f"definitions journal record is damaged: {exc}") from exc
        state.apply(change)
    return state.to_json()


def load_definitions(directory: Path) -> dict[str, Any] | None:
    """The saved definitions (snapshot and journal), or None for a fresh data directory;
    changes nothing on disk."""
    data = _read_snapshot(directory)
    if data is None:
        return None
    payloads = read_journal(journal_path(directory, int(data.get(JOURNAL_KEY, 0))))
    return _replay(data, payloads)


# -------------------------------------------------------------------------------- writer


class DefinitionsJournal:
    """Saves definitions changes as journal records; see the module docstring.

    ``snapshot`` returns the definitions as they are now (called on the event-loop thread, for
    compactions); ``executor`` runs the disk work (the loop's default pool when None)."""

    def __init__(
        self,
        directory: Path,
        snapshot: Callable[[], dict[str, Any]],
        executor: Executor | None = None,
        *,
        compact_min_bytes: int | None = None,
    ) -> None:
        self._directory = directory
        self._snapshot = snapshot
        self._executor = executor
        self._compact_min_bytes = (
            COMPACT_MIN_BYTES if compact_min_bytes is None else compact_min_bytes
        )
        self._file: JournalFile | None = None  # None until opened or first compacted
        self._generation = 0
        self._snapshot_bytes = 0
        self._pending: list[bytes] = []  # encoded records not yet written
        self._failed = False  # the last write failed: compact next
        self._recorded = 0  # changes recorded
        self._durable = 0  # every change up to this one is on disk
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.writes = 0  # completed journal writes, for tests and benchmarks
        self.compactions = 0  # completed compactions

    def open(self) -> dict[str, Any] | None:
        """Load the definitions (see the module docstring); None for a fresh directory, whose
        first save writes a snapshot. Blocks on the disk: run it on the fsync pool."""
        self._directory.mkdir(parents=True, exist_ok=True)
        data = _read_snapshot(self._directory)
        if data is None:
            return None
        generation = int(data.get(JOURNAL_KEY, 0))
        self._file, payloads = JournalFile.open(journal_path(self._directory, generation))
        self._generation = generation
        self._snapshot_bytes = (self._directory / FILE_NAME).stat().st_size
        for stray in self._directory.iterdir():
            found = _JOURNAL_NAME.fullmatch(stray.name)
            if found is not None and int(found.group(1)) != generation:
                stray.unlink()
        return _replay(data, payloads)

    def record(self, change: Change) -> None:
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
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.append((change, future))
        if self._writer is None:
            self._writer = loop.create_task(self._write_loop())
        await future

    async def close(self) -> None:
        """Wait for a running write (and the ones queued behind it), then close the file."""
        while self._writer is not None:
            await asyncio.shield(self._writer)
        if self._file is not None:
            self._file.close()
            self._file = None

    async def _write_loop(self) -> None:
        try:
            while self._waiters:
                covers = self._recorded
                try:
                    if self._file is None or self._failed or self._due_for_compaction():
                        await self._compact()
                    else:
                        await self._write(self._file)
                except Exception as exc:  # every failure must reach its waiters, or they hang
                    self._failed = True
                    self._settle(covers, exc)
                    continue
                self._durable = max(self._durable, covers)
                self._settle(covers, None)
        finally:
            self._writer = None

    def _due_for_compaction(self) -> bool:
        assert self._file is not None
        return self._file.size > max(self._compact_min_bytes, self._snapshot_bytes)

    async def _write(self, file: JournalFile) -> None:
        batch = b"".join(self._pending)
        self._pending = []

        def write() -> None:
            file.append(batch)
            file.sync()

        await run_off_loop(self._executor, write)
        self.writes += 1

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
        self, generation: int, data: dict[str, Any], old: JournalFile | None
    ) -> tuple[JournalFile, int]:
        """On the pool: new journal, snapshot naming it, old journal gone (in that order)."""
        payload = encode_definitions(data)
        new = JournalFile.create(journal_path(self._directory, generation))
        try:
            replace_file(self._directory / FILE_NAME, payload, mode=0o600)
        except BaseException:
            new.close()
            new.path.unlink(missing_ok=True)
            raise
        if old is not None:
            old.close()
            old.path.unlink(missing_ok=True)
        return new, len(payload)

    def _settle(self, covers: int, error: Exception | None) -> None:
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
