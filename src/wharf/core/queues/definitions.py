"""Durable definitions (virtual hosts, users, permissions, durable exchanges, queues and their
bindings) in one JSON file, in the spirit of RabbitMQ's definitions export.

The file is rewritten whole after every change: written to a temporary file, fsynced, renamed
over the old one, and the directory fsynced, so a crash leaves either the old or the new
version. Argument tables are stored as base64 AMQP field tables so every value type survives
exactly.

How saving works: :class:`DefinitionsWriter` writes on the broker's fsync pool, never on the
event-loop thread, and "latest wins". :meth:`DefinitionsWriter.save` counts a change and waits
until a write that began after it has finished. One write runs at a time: it takes its snapshot
of the definitions on the event-loop thread as it starts (so the file is a consistent state
that includes every change counted so far), encodes it there, and writes the bytes on the pool.
Changes counted while a write runs are carried by the single next one. A failed write fails the
saves it was meant to cover (their callers report the error); a later save tries again.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from concurrent.futures import Executor
from functools import partial
from pathlib import Path
from typing import Any

from wharf.core.durability import run_off_loop
from wharf.core.queues import properties as props
from wharf.errors import StorageError
from wharf.storage.checkpoint import replace_file

__all__ = [
    "DefinitionsWriter",
    "decode_arguments",
    "encode_arguments",
    "encode_definitions",
    "load_definitions",
    "write_definitions",
]

FILE_NAME = "definitions.json"


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
    """The content of the definitions file for ``data``."""
    return json.dumps(data, indent=1, sort_keys=True).encode("utf-8")


def write_definitions(directory: Path, payload: bytes) -> None:
    """Atomically replace ``<directory>/definitions.json`` with ``payload`` (blocks on the
    disk: :class:`DefinitionsWriter` runs it on the fsync pool)."""
    replace_file(directory / FILE_NAME, payload, mode=0o600)


def load_definitions(directory: Path) -> dict[str, Any] | None:
    """The saved definitions, or None for a fresh data directory."""
    try:
        raw = (directory / FILE_NAME).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StorageError(f"cannot read definitions: {exc}", errno=exc.errno) from exc
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise StorageError(f"definitions file {directory / FILE_NAME} is damaged: {exc}") from exc
    if not isinstance(data, dict):
        raise StorageError(f"definitions file {directory / FILE_NAME} is damaged")
    return data


class DefinitionsWriter:
    """Saves the definitions file, latest wins; see the module docstring.

    ``snapshot`` returns the definitions as they are now (called on the event-loop thread);
    ``executor`` runs the writes (the loop's default pool when None)."""

    def __init__(
        self,
        directory: Path,
        snapshot: Callable[[], dict[str, Any]],
        executor: Executor | None = None,
    ) -> None:
        self._directory = directory
        self._snapshot = snapshot
        self._executor = executor
        self._counted = 0  # changes counted by save()
        self._written = 0  # every change up to this one is on disk
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.writes = 0  # completed writes, for tests and benchmarks

    async def save(self) -> None:
        """Count a change made in memory; return once the file includes it (raises
        StorageError when the write meant to carry it failed)."""
        self._counted += 1
        await self._wait_for(self._counted)

    async def wait_saved(self) -> None:
        """Return once every change counted so far is on disk (at once when none is pending):
        for a redeclaration, whose declare-ok promises the same as the first one."""
        await self._wait_for(self._counted)

    async def close(self) -> None:
        """Wait for a running write (and the ones queued behind it) to finish."""
        while self._writer is not None:
            await asyncio.shield(self._writer)

    async def _wait_for(self, change: int) -> None:
        if change <= self._written:
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        self._waiters.append((change, future))
        if self._writer is None:
            self._writer = loop.create_task(self._write_loop())
        await future

    async def _write_loop(self) -> None:
        try:
            while self._waiters:
                covers = self._counted
                try:
                    payload = encode_definitions(self._snapshot())
                    await run_off_loop(
                        self._executor, partial(write_definitions, self._directory, payload)
                    )
                except Exception as exc:  # every failure must reach its waiters, or they hang
                    self._settle(covers, exc)
                    continue
                self._written = max(self._written, covers)
                self.writes += 1
                self._settle(covers, None)
        finally:
            self._writer = None

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
