"""Durable definitions (virtual hosts, users, permissions, durable exchanges, queues and their
bindings): a snapshot in RabbitMQ's definitions-export shape plus a journal of the changes
since, so a change costs the same however many definitions there are.

Files, in the registry's directory:

* ``definitions.json``: the snapshot, ``{"vhosts": [...], "exchanges": [...], "queues": [...],
  "bindings": [...], "users": [...], "permissions": [...], "journal": <generation>}``.
  Argument tables are base64 AMQP field tables, so every value type survives exactly.
* ``definitions.<generation>.journal``: one record (:mod:`wharf.storage.journal` framing) per
  change made after that snapshot, a compact JSON object with an ``"op"``: ``vhost``,
  ``vhost.delete``, ``exchange``, ``exchange.delete``, ``queue``, ``queue.delete``, ``bind``,
  ``unbind``, ``users``. Each is the new state of one thing (deleting a queue or an exchange
  also drops its bindings, as in memory), so replaying them in order over the snapshot gives
  the definitions as they were.

Saving, loading, group commit and compaction are :mod:`wharf.core.snapshot_journal`'s (a
declare-ok is sent once its record is on disk); this module holds the entries and how records
replay over the snapshot.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wharf.core import snapshot_journal
from wharf.core.queues import properties as props
from wharf.core.snapshot_journal import JOURNAL_KEY, SnapshotJournal, load_snapshot
from wharf.errors import StorageError

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

NAME = "definitions"
FILE_NAME = f"{NAME}.json"
# The journal is compacted once larger than the snapshot and than this.
COMPACT_MIN_BYTES = 1 << 20
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


# An empty table, as most queues, exchanges and bindings have (decoded without decoding).
_NO_ARGUMENTS = base64.b64encode(props.encode_table({})).decode("ascii")


def decode_arguments(text: str) -> dict[str, Any]:
    if text == _NO_ARGUMENTS:
        return {}
    table = props.decode_table(base64.b64decode(text))
    return {k: bytes(v) if isinstance(v, bytearray) else v for k, v in table.items()}


def encode_definitions(data: dict[str, Any]) -> bytes:
    """The content of the snapshot file for ``data``."""
    return snapshot_journal.encode_snapshot(data)


def journal_path(directory: Path, generation: int) -> Path:
    return snapshot_journal.journal_path(directory, NAME, generation)


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


def _replay(data: dict[str, Any], changes: list[dict[str, Any]]) -> dict[str, Any]:
    state = _Definitions(data)
    for change in changes:
        state.apply(change)
    return state.to_json()


def load_definitions(directory: Path) -> dict[str, Any] | None:
    """The saved definitions (snapshot and journal), or None for a fresh data directory;
    changes nothing on disk."""
    return load_snapshot(directory, NAME, _replay)


class DefinitionsJournal(SnapshotJournal):
    """Saves definitions changes as journal records (see
    :class:`~wharf.core.snapshot_journal.SnapshotJournal`); the files are readable by their
    owner only (they hold password hashes)."""

    def __init__(
        self,
        directory: Path,
        snapshot: Callable[[], dict[str, Any]],
        executor: Executor | None = None,
        *,
        compact_min_bytes: int | None = None,
    ) -> None:
        super().__init__(
            directory,
            NAME,
            snapshot,
            _replay,
            executor,
            compact_min_bytes=COMPACT_MIN_BYTES if compact_min_bytes is None else compact_min_bytes,
            mode=0o600,
        )
