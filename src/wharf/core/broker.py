"""The embedded broker: one object that owns every core component of a data directory.

How it works: :meth:`Broker.open` is an async context manager. Entering it takes an exclusive
lock on the data directory (``<data>/.lock``), then starts the components in dependency order;
leaving it stops them in reverse order (background tasks first, then a final flush, then the
logs are closed). Front ends (Kafka, AMQP, HTTP) and embedding applications hold the same
``Broker`` object.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from wharf.core.clock import Clock
from wharf.core.config import BrokerConfig
from wharf.core.vhost_registry import VhostRegistry
from wharf.errors import ResourceLockedError

__all__ = ["Broker"]


class Broker:
    """A broker over one data directory; create it with :meth:`open`."""

    def __init__(self, path: Path, config: BrokerConfig, clock: Clock) -> None:
        self.path = path
        self.config = config
        self.clock = clock
        self._lock_fd: int | None = None
        self._vhosts: VhostRegistry | None = None
        self._closed = False

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | os.PathLike[str],
        config: BrokerConfig | None = None,
        *,
        clock: Clock | None = None,
    ) -> AsyncIterator[Broker]:
        """Open (creating if needed) the broker stored at ``path``; close it on exit."""
        broker = await cls.start(path, config, clock=clock)
        try:
            yield broker
        finally:
            await broker.close()

    @classmethod
    async def start(
        cls,
        path: str | os.PathLike[str],
        config: BrokerConfig | None = None,
        *,
        clock: Clock | None = None,
    ) -> Broker:
        """Open the broker without a ``with`` block; the caller must ``await broker.close()``."""
        broker = cls(Path(path), config or BrokerConfig(), clock or Clock())
        broker._lock_data_dir()
        try:
            await broker._start_components()
        except BaseException:
            await broker.close()
            raise
        return broker

    async def _start_components(self) -> None:
        """Open every component, in dependency order."""
        self._vhosts = await VhostRegistry.open(self.path / "queues", self.config, self.clock)

    @property
    def vhosts(self) -> VhostRegistry:
        """The AMQP side: virtual hosts with their exchanges and queues, users."""
        if self._vhosts is None:
            raise RuntimeError("the broker is not open")
        return self._vhosts

    async def close(self) -> None:
        """Stop background work, flush and close every log, release the directory lock."""
        if self._closed:
            return
        self._closed = True
        try:
            if self._vhosts is not None:
                await self._vhosts.close()
        finally:
            self._unlock_data_dir()

    @property
    def closed(self) -> bool:
        return self._closed

    def _lock_data_dir(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ResourceLockedError(
                f"data directory {self.path} is in use by another broker"
            ) from None
        self._lock_fd = fd

    def _unlock_data_dir(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None
