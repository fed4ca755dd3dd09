"""A node's read cache of stored objects: a bounded LRU of aligned chunks.

How it works: objects are immutable once written, so a cached byte is never stale and nothing
is ever invalidated. An object is cut into aligned chunks of ``chunk_bytes`` (chunk ``i`` holds
bytes ``i * chunk_bytes`` up to the next boundary, the last one up to the object's end); the
cache maps ``(key, i)`` to the chunk's bytes in least-recently-used order and drops the oldest
chunks past ``capacity_bytes``. An intake object (at most a few MiB) is one or two chunks, so it
is cached whole; a larger per-partition object is cached where it is read.

:meth:`ObjectCache.read_ranges` serves byte ranges of one object: chunks in memory are hits;
chunks another caller is already fetching are awaited (that caller's GET serves both: misses
for the same chunk are coalesced); the rest are fetched, each run of adjacent missing chunks in
one ranged GET. A fetch runs as a task of its own, so a waiter that is cancelled (a consumer
gone) neither cancels it for the others nor leaves them waiting. :meth:`ObjectCache.remember`
takes an object the node has just written, so tail consumers read it from memory.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence

from wharf.cluster.objectstore import ObjectStore
from wharf.errors import StorageError

__all__ = ["DEFAULT_CHUNK_BYTES", "ObjectCache"]

DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024

_ChunkKey = tuple[str, int]


class ObjectCache:
    """See the module docstring. ``hits`` counts chunks served without a GET of their own
    (from memory, or by joining a GET in flight); ``misses`` counts chunks fetched."""

    def __init__(
        self, store: ObjectStore, capacity_bytes: int, chunk_bytes: int = DEFAULT_CHUNK_BYTES
    ) -> None:
        if chunk_bytes < 1 or capacity_bytes < 0:
            raise ValueError("chunk_bytes must be positive and capacity_bytes not negative")
        self._store = store
        self.capacity_bytes = capacity_bytes
        self.chunk_bytes = chunk_bytes
        self._chunks: OrderedDict[_ChunkKey, bytes] = OrderedDict()
        self._loading: dict[_ChunkKey, asyncio.Task[dict[int, bytes]]] = {}
        self.size_bytes = 0
        self.hits = 0
        self.misses = 0

    def remember(self, key: str, data: bytes) -> None:
        """Cache the whole object ``key`` (one the node has just written)."""
        size = self.chunk_bytes
        for index in range(0, (len(data) + size - 1) // size):
            self._insert((key, index), data[index * size : (index + 1) * size])

    async def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """The bytes of each ``(start, length)`` range of object ``key``; ``StorageError``
        when the object ends before a range does (the index and the object disagree)."""
        size = self.chunk_bytes
        wanted = sorted(
            {
                index
                for start, length in ranges
                for index in range(start // size, (start + length - 1) // size + 1)
            }
        )
        chunks = await self._get_chunks(key, wanted)
        pieces: list[bytes] = []
        for start, length in ranges:
            first, last = start // size, (start + length - 1) // size
            joined = b"".join(chunks[index] for index in range(first, last + 1))
            piece = joined[start - first * size : start - first * size + length]
            if len(piece) != length:
                raise StorageError(
                    f"object {key} ends at byte {first * size + len(joined)}, before bytes "
                    f"{start}..{start + length} that the index places in it"
                )
            pieces.append(piece)
        return pieces

    async def _get_chunks(self, key: str, indexes: list[int]) -> dict[int, bytes]:
        found: dict[int, bytes] = {}
        pending: dict[int, asyncio.Task[dict[int, bytes]]] = {}
        missing: list[int] = []
        for index in indexes:
            chunk_key = (key, index)
            data = self._chunks.get(chunk_key)
            if data is not None:
                self._chunks.move_to_end(chunk_key)
                found[index] = data
                self.hits += 1
            elif chunk_key in self._loading:
                pending[index] = self._loading[chunk_key]
                self.hits += 1
            else:
                missing.append(index)
        for first, count in _runs(missing):
            task = asyncio.create_task(self._fetch(key, first, count))
            task.add_done_callback(_retrieve)
            for index in range(first, first + count):
                self._loading[(key, index)] = task
                pending[index] = task
            self.misses += count
        for index, task in pending.items():
            fetched = await asyncio.shield(task)
            found[index] = fetched.get(index, b"")
        return found

    async def _fetch(self, key: str, first: int, count: int) -> dict[int, bytes]:
        """One ranged GET for chunks ``first .. first + count - 1``, cached as it lands."""
        size = self.chunk_bytes
        try:
            data = await self._store.get_range(key, first * size, count * size)
            fetched: dict[int, bytes] = {}
            for n in range(count):
                chunk = data[n * size : (n + 1) * size]
                fetched[first + n] = chunk
                if chunk:
                    self._insert((key, first + n), chunk)
            return fetched
        finally:
            for index in range(first, first + count):
                self._loading.pop((key, index), None)

    def _insert(self, chunk_key: _ChunkKey, data: bytes) -> None:
        old = self._chunks.pop(chunk_key, None)
        if old is not None:
            self.size_bytes -= len(old)
        if len(data) > self.capacity_bytes:
            return
        self._chunks[chunk_key] = data
        self.size_bytes += len(data)
        while self.size_bytes > self.capacity_bytes:
            _, evicted = self._chunks.popitem(last=False)
            self.size_bytes -= len(evicted)


def _runs(indexes: list[int]) -> list[tuple[int, int]]:
    """Sorted chunk indexes as ``(first, count)`` runs of adjacent ones."""
    runs: list[tuple[int, int]] = []
    for index in indexes:
        if runs and runs[-1][0] + runs[-1][1] == index:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((index, 1))
    return runs


def _retrieve(task: asyncio.Task[dict[int, bytes]]) -> None:
    """Mark a fetch's failure as seen: every waiter may have gone (cancelled) before it
    ended, and asyncio would report it as never retrieved."""
    if not task.cancelled():
        task.exception()
