"""High watermarks learnt from PostgreSQL notifications, for fetches that long-poll.

How it works (docs/cluster.md, "Fetch and long poll", rule 7):

- One connection of its own (:meth:`Database.open_listener`, outside the pool) ``LISTEN``s on
  ``wharf_streams``. Each flush's commit notifies there: space-separated
  ``<topic id hex>:<partition>:<next offset>`` entries, or ``*`` (too many partitions to name,
  or anything unreadable). An entry raises that partition's known high watermark (they only
  grow) and wakes the fetches parked on it below the new watermark.
- :meth:`Watermarks.wait_for_any` answers at once when a known watermark already passed one of
  the offsets, otherwise parks until a notification passes one, or the timeout (False). It
  never queries the database itself.
- Every notification is a hint and a gap in them is invisible, so: ``*``, the loss of the LISTEN
  connection and its return each wake every parked fetch (True: re-read the database) and the
  first two drop the known watermarks. While the connection is down nothing is learnt from
  notifications; it is opened again with a jittered, doubling delay.
- A safety net: every ``refresh_interval`` one query reads the watermarks of all partitions that
  fetches are parked on (through the pool), so a lost notification delays a fetch by at most
  that long, never for its whole wait.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, LiteralString

from wharf.cluster.database import Database, DatabaseError, Transaction

if TYPE_CHECKING:
    from psycopg import AsyncConnection

__all__ = ["CHANNEL", "REFRESH_ALL", "Watermarks", "parse_payload"]

CHANNEL = "wharf_streams"
REFRESH_ALL = "*"

_RECONNECT_FIRST_S = 0.05
_RECONNECT_CAP_S = 2.0
_log = logging.getLogger(__name__)

_Key = tuple[uuid.UUID, int]

_REFRESH_SQL: LiteralString = """
    SELECT p.topic_id, p.partition, p.next_offset
    FROM stream_partitions p
    JOIN unnest(%s::uuid[], %s::integer[]) AS k(topic_id, partition) USING (topic_id, partition)
"""


def parse_payload(payload: str) -> dict[_Key, int] | None:
    """The partitions and high watermarks a notification names; ``None`` for ``*``, which
    asks for everything to be read again, and for a payload that cannot be read."""
    if payload.strip() == REFRESH_ALL:
        return None
    found: dict[_Key, int] = {}
    try:
        for entry in payload.split():
            topic, partition, next_offset = entry.split(":")
            key = (uuid.UUID(hex=topic), int(partition))
            found[key] = max(int(next_offset), found.get(key, 0))
    except ValueError:
        _log.warning("unreadable %s notification %r: refreshing all", CHANNEL, payload[:200])
        return None
    return found


class _Waiter:
    """A parked fetch: the lowest offset it waits past per partition, and its wake-up."""

    __slots__ = ("offsets", "woken")

    def __init__(self, offsets: dict[_Key, int]) -> None:
        self.offsets = offsets
        self.woken: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def wake(self) -> None:
        if not self.woken.done():
            self.woken.set_result(None)


class Watermarks:
    """A node's view of the partitions' high watermarks; see the module docstring."""

    def __init__(self, db: Database, refresh_interval: float = 1.0) -> None:
        if refresh_interval <= 0:
            raise ValueError("refresh_interval must be positive")
        self._db = db
        self.refresh_interval = refresh_interval
        self._known: dict[_Key, int] = {}
        self._parked: dict[_Key, set[_Waiter]] = {}
        self._connected = False
        self._closed = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def connected(self) -> bool:
        """Whether the LISTEN connection is up (watermarks are known only while it is)."""
        return self._connected

    async def start(self) -> None:
        """Open the LISTEN connection (``DatabaseError`` if it cannot), then keep it."""
        connection = await self._listen()
        self._connected = True
        self._tasks = [
            asyncio.create_task(self._listen_loop(connection), name="watermarks-listen"),
            asyncio.create_task(self._refresh_loop(), name="watermarks-refresh"),
        ]

    async def close(self) -> None:
        """Stop listening; parked fetches wake (True) and later waits return at once."""
        self._closed = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        self._connected = False
        self._known.clear()
        self._wake_all()

    def high_watermark(self, topic_id: uuid.UUID, partition: int) -> int | None:
        """The partition's high watermark as last notified; ``None`` when not known."""
        return self._known.get((topic_id, partition))

    async def wait_for_any(
        self, positions: Sequence[tuple[uuid.UUID, int, int]], timeout_s: float
    ) -> bool:
        """Wait until some ``(topic id, partition)``'s high watermark passes its offset, or a
        gap in notifications means the caller must read again (True), or ``timeout_s`` ends
        (False). Never queries the database."""
        if self._closed:
            return True
        offsets: dict[_Key, int] = {}
        for topic_id, partition, offset in positions:
            key = (topic_id, partition)
            known = self._known.get(key)
            if known is not None and known > offset:
                return True
            offsets[key] = min(offset, offsets.get(key, offset))
        waiter = _Waiter(offsets)
        for key in offsets:
            self._parked.setdefault(key, set()).add(waiter)
        try:
            async with asyncio.timeout(timeout_s):
                await waiter.woken
            return True
        except TimeoutError:
            return False
        finally:
            for key in offsets:
                parked = self._parked.get(key)
                if parked is not None:
                    parked.discard(waiter)
                    if not parked:
                        del self._parked[key]

    def _advance(self, key: _Key, high_watermark: int, *, remember: bool) -> None:
        if remember and high_watermark > self._known.get(key, -1):
            self._known[key] = high_watermark
        for waiter in self._parked.get(key, ()):
            if high_watermark > waiter.offsets[key]:
                waiter.wake()

    def _wake_all(self) -> None:
        for parked in self._parked.values():
            for waiter in parked:
                waiter.wake()

    def _on_notification(self, payload: str) -> None:
        entries = parse_payload(payload)
        if entries is None:
            self._known.clear()
            self._wake_all()
            return
        for key, high_watermark in entries.items():
            self._advance(key, high_watermark, remember=True)

    async def _listen(self) -> AsyncConnection[Any]:
        import psycopg

        connection = await self._db.open_listener()
        try:
            await connection.execute("LISTEN wharf_streams")
        except psycopg.Error as exc:
            await connection.close()
            raise DatabaseError(self._db.name, f"LISTEN failed: {exc}", retriable=True) from exc
        return connection

    async def _listen_loop(self, connection: AsyncConnection[Any]) -> None:
        import psycopg

        while True:
            try:
                async for notify in connection.notifies():
                    self._on_notification(notify.payload)
            except (psycopg.Error, OSError) as exc:
                _log.warning("the %s LISTEN connection was lost: %s", CHANNEL, exc)
            finally:
                with contextlib.suppress(psycopg.Error, OSError):
                    await connection.close()
            self._connected = False
            self._known.clear()
            self._wake_all()
            connection = await self._reconnect()
            self._connected = True
            # notifications sent while it was down are lost: whoever parked meanwhile reads again
            self._wake_all()

    async def _reconnect(self) -> AsyncConnection[Any]:
        delay = _RECONNECT_FIRST_S
        while True:
            await asyncio.sleep(random.uniform(delay / 2, delay))
            try:
                connection = await self._listen()
            except DatabaseError as exc:
                _log.warning("cannot listen on %s again yet: %s", CHANNEL, exc.reason)
                delay = min(_RECONNECT_CAP_S, delay * 2)
                continue
            _log.info("listening on %s again", CHANNEL)
            return connection

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_interval)
            keys = list(self._parked)
            if not keys:
                continue
            try:
                rows = await self._read(keys)
            except DatabaseError as exc:
                _log.warning("cannot refresh the parked partitions' watermarks: %s", exc.reason)
                continue
            for topic_id, partition, next_offset in rows:
                self._advance((topic_id, partition), int(next_offset), remember=self._connected)

    async def _read(self, keys: Iterable[_Key]) -> list[tuple[Any, ...]]:
        topics, partitions = zip(*keys, strict=True)

        async def body(tx: Transaction) -> list[tuple[Any, ...]]:
            return await tx.fetchall(_REFRESH_SQL, (list(topics), list(partitions)))

        return await self._db.run(body, "streams.watermarks")
