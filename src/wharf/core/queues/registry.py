"""The virtual hosts of a broker, their saved definitions and their timer.

``broker.vhosts`` is a :class:`VhostRegistry`. Opening it loads the saved definitions (the
``definitions.json`` snapshot and the journal of changes since) and re-declares every durable
exchange, queue and binding (queues recover their messages from their logs). They also hold the
broker's users and permissions: the registry is given the broker's
:class:`~wharf.core.users.UserStore`, restores it from them and journals it whole when the
broker saves it. Every change of a vhost is journaled through a
:class:`~wharf.core.queues.definitions.DefinitionsJournal` (written on the broker's fsync pool;
every change's caller awaits its record's durability, so a declare-ok means the definition is
on disk). One timer on the broker's clock (a
:class:`~wharf.core.timer_chain.TimerChain`) runs the timers of every virtual host: it fires at
the earliest deadline (message expiry at a queue head, a delayed message coming due, an
x-expires queue) or in one second, calls :meth:`VirtualHost.tick`, and about once a second
reclaims log space. A vhost that gains a nearer deadline wakes it, which re-arms it sooner.

Open queue logs are bounded, as partition logs are: at most ``open_queue_logs`` queues hold
their logs open. Beyond it the registry closes the logs of idle queues (nobody consuming,
nothing unacknowledged, unflushed or pending), least recently opened first, sparing once
those used since it last looked; a closed queue keeps working and opens its logs again when
used (:mod:`wharf.core.queues.store`). A clean close saves ``summaries.json`` with what
each durable queue's logs hold, so that the next start restores the queues without opening any
log; the file is read and deleted at open. After a crash there is none: the queues whose logs
exist are added without reading them, and a background task reads them back after the open, a
batch to a job of the fsync pool (:meth:`VirtualHost.recover_queues`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from wharf.core.clean_stop import save_summary, take_summary
from wharf.core.clock import Clock
from wharf.core.config import BrokerConfig, default_open_logs
from wharf.core.durability import run_off_loop
from wharf.core.queues.definitions import (
    Change,
    DefinitionsJournal,
    binding_entry,
    decode_arguments,
    exchange_entry,
    queue_entry,
)
from wharf.core.queues.exchanges import DestKind
from wharf.core.queues.queue import Queue
from wharf.core.queues.vhost import QueueSummary, VirtualHost, dir_name
from wharf.core.stats import HistogramFamily
from wharf.core.timer_chain import TimerChain
from wharf.core.users import UserStore
from wharf.errors import NotFoundError, PreconditionError, WharfError

__all__ = ["VhostRegistry"]

log = logging.getLogger(__name__)

DEFAULT_VHOST = "/"
_MAINTAIN_EVERY_S = 1.0
SUMMARIES = "summaries.json"
# Idle queues whose logs are closed together, and the share of the limit closing aims for.
_EVICT_AT_ONCE = 16
_EVICT_TO = 7 / 8

_Summaries = dict[str, dict[str, QueueSummary]]


class VhostRegistry:
    """Every virtual host of a broker; ``registry[name]`` -> :class:`VirtualHost`."""

    def __init__(
        self,
        path: Path,
        config: BrokerConfig,
        clock: Clock,
        users: UserStore,
        fsync_latency: HistogramFamily[str] | None = None,
        executor: Executor | None = None,
    ) -> None:
        self.path = path
        self.config = config
        self.clock = clock
        self._users = users  # the broker's; saved with the definitions
        self._fsync_latency = fsync_latency
        self._executor = executor
        self._vhosts: dict[str, VirtualHost] = {}
        self._loading = False
        self.definitions = DefinitionsJournal(path, self._to_json, executor)
        self._timer = TimerChain(clock, self._on_timer, self._next_delay_s, "queue timer")
        # when (clock ms) the timer was last asked to run next; a deadline before it wakes it
        self._next_run_ms = float("-inf")
        self._last_maintain = clock.monotonic()
        # durable queues whose logs are open, least recently opened first
        self._loaded: dict[Queue, None] = {}
        # two logs per queue: half the default share of open files that partitions get
        self._max_loaded = config.open_queue_logs or max(32, default_open_logs() // 2)
        self._evicting: asyncio.Task[None] | None = None
        # reading back the queues a crash left (see VirtualHost.recover_queues)
        self._recovering: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: Path,
        config: BrokerConfig,
        clock: Clock,
        users: UserStore,
        *,
        fsync_latency: HistogramFamily[str] | None = None,
        executor: Executor | None = None,
        start_timer: bool = True,
    ) -> VhostRegistry:
        """Open the registry stored under ``path`` (created with vhost "/" if new, saving
        ``users`` as they are; else ``users`` are restored from the saved definitions).

        ``start_timer`` False leaves the timers to explicit :meth:`tick` calls (tests with a
        manual clock). ``fsync_latency``: the broker's fsync histograms, which the queue logs'
        group commits record into. ``executor``: the broker's fsync pool, which runs the
        definitions saves and every queue log's disk waits (the loop's default pool when
        None)."""
        registry = cls(path, config, clock, users, fsync_latency, executor)
        data = await run_off_loop(executor, registry.definitions.open)
        if data is None:
            registry._add_vhost(DEFAULT_VHOST)
            await registry.save()  # the first snapshot, with the default vhost
        else:
            summaries = await run_off_loop(executor, registry._take_summaries)
            await registry._restore(data, summaries)
            if any(vhost.unrecovered for vhost in registry._vhosts.values()):
                registry._recovering = asyncio.create_task(registry._recover_queues())
        if start_timer:
            registry._timer.start()
        return registry

    # ------------------------------------------------------------------------------ access

    def __getitem__(self, name: str) -> VirtualHost:
        try:
            return self._vhosts[name]
        except KeyError:
            raise NotFoundError(f"no vhost '{name}'") from None

    def __contains__(self, name: object) -> bool:
        return name in self._vhosts

    def __iter__(self) -> Iterator[VirtualHost]:
        return iter(list(self._vhosts.values()))

    def names(self) -> list[str]:
        return list(self._vhosts)

    async def create(self, name: str) -> VirtualHost:
        """Create a virtual host (idempotent)."""
        if name in self._vhosts:
            return self._vhosts[name]
        vhost = self._add_vhost(name)
        await self._save_change({"op": "vhost", "name": name})
        return vhost

    async def delete(self, name: str) -> None:
        """Delete a virtual host with everything in it."""
        vhost = self[name]
        for queue in list(vhost.queues.values()):
            await vhost.delete_queue(queue.name, owner=queue.exclusive_owner)
        for exchange_name in [n for n in vhost.exchanges if n and not n.startswith("amq.")]:
            await vhost.delete_exchange(exchange_name)
        await vhost.close()
        del self._vhosts[name]
        self._users.forget_vhost(name)
        self._record({"op": "vhost.delete", "name": name})
        await self.save()

    def _add_vhost(self, name: str) -> VirtualHost:
        if not name:
            raise PreconditionError("a virtual host needs a name")
        vhost = VirtualHost(
            name,
            self.path / "vhosts" / dir_name(name),
            self.config,
            self.clock,
            self._saved,
            self._saved,
            self._fsync_latency,
            self._executor,
            record=self._record,
        )
        vhost.wakeup = self._timer.wake
        vhost.wake_at = self._wake_at
        vhost.queue_loaded = self._queue_loaded
        vhost.queue_dropped = self._queue_dropped
        self._vhosts[name] = vhost
        return vhost

    # ------------------------------------------------------------------------- definitions

    async def save(self) -> None:
        """Save the users and permissions and return once they are on disk (awaited by the
        broker after changing them)."""
        await self._save_change({"op": "users", **self._users.to_json()})

    def _record(self, change: Change) -> None:
        """Journal a change the vhosts made in memory (not while restoring them)."""
        if not self._loading:
            self.definitions.record(change)

    async def _saved(self) -> None:
        """Return once every change recorded so far is on disk."""
        if not self._loading:
            await self.definitions.wait_durable()

    async def _save_change(self, change: Change) -> None:
        self._record(change)
        await self._saved()

    def _to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = self._users.to_json()
        data["vhosts"] = [{"name": n} for n in self._vhosts]
        exchanges: list[dict[str, Any]] = []
        queues: list[dict[str, Any]] = []
        bindings: list[dict[str, Any]] = []
        for vhost in self._vhosts.values():
            durable_queues = {name for name, q in vhost.queues.items() if q.store.durable}
            durable_exchanges = {name for name, ex in vhost.exchanges.items() if ex.durable}
            for name, ex in vhost.exchanges.items():
                if name and not name.startswith("amq.") and ex.durable:
                    exchanges.append(exchange_entry(vhost.name, ex))
            queues.extend(queue_entry(vhost.name, vhost.queues[name]) for name in durable_queues)
            for b in vhost.bindings():
                dest_ok = (
                    b.destination in durable_queues
                    if b.kind is DestKind.QUEUE
                    else b.destination in durable_exchanges
                )
                if b.source in durable_exchanges and dest_ok:
                    bindings.append(binding_entry(vhost.name, b))
        data["exchanges"] = exchanges
        data["queues"] = queues
        data["bindings"] = bindings
        return data

    async def _restore(self, data: dict[str, Any], summaries: _Summaries | None = None) -> None:
        self._loading = True
        try:
            self._users.restore(data)
            for v in data.get("vhosts", []):
                self._add_vhost(v["name"])
            for vhost in self._vhosts.values():
                vhost.begin_restore((summaries or {}).get(vhost.name))
            for e in data.get("exchanges", []):
                await self[e["vhost"]].declare_exchange(
                    e["name"],
                    e["type"],
                    durable=True,
                    auto_delete=e["auto_delete"],
                    internal=e["internal"],
                    arguments=decode_arguments(e["arguments"]),
                )
            for q in data.get("queues", []):
                await self[q["vhost"]].declare_queue(
                    q["name"],
                    durable=True,
                    auto_delete=q["auto_delete"],
                    arguments=decode_arguments(q["arguments"]),
                )
            for b in data.get("bindings", []):
                vhost = self[b["vhost"]]
                args = decode_arguments(b["arguments"])
                if b["destination_type"] == DestKind.QUEUE.value:
                    await vhost.bind_queue(b["destination"], b["source"], b["routing_key"], args)
                else:
                    await vhost.bind_exchange(b["destination"], b["source"], b["routing_key"], args)
        finally:
            self._loading = False
            for vhost in self._vhosts.values():
                vhost.end_restore()

    async def _recover_queues(self) -> None:
        began = self.clock.monotonic()
        count = sum(vhost.unrecovered for vhost in self._vhosts.values())
        for vhost in list(self._vhosts.values()):
            await vhost.recover_queues()
        log.info("read back the logs of %d queues left by a crash in %.2f s", count,
                 self.clock.monotonic() - began)

    @property
    def recovering(self) -> bool:
        """Whether queues a crash left are still being read back in the background."""
        return self._recovering is not None and not self._recovering.done()

    # ------------------------------------------------------------------------------ timers

    async def tick(self) -> None:
        """Run every virtual host's due timers now."""
        for vhost in list(self._vhosts.values()):
            await vhost.tick()

    async def maintain(self) -> None:
        """Reclaim log space now; close idle queues' logs while too many are open."""
        for vhost in list(self._vhosts.values()):
            await vhost.maintain()
        self._evict_if_over()

    def _next_delay_s(self) -> float:
        """Seconds to the earliest vhost deadline, at most :data:`_MAINTAIN_EVERY_S` (asks
        every queue: only when the timer arms, or a nearer deadline wakes it)."""
        now = self.clock.now_ms()
        deadlines = [d for v in self._vhosts.values() if (d := v.next_deadline()) is not None]
        delay = _MAINTAIN_EVERY_S
        if deadlines:
            delay = min(delay, max(0.0, (min(deadlines) - now) / 1000.0))
        self._next_run_ms = now + delay * 1000.0
        return delay

    def _wake_at(self, deadline_ms: int) -> None:
        """A vhost gained ``deadline_ms``: wake the timer only if it would run too late."""
        if deadline_ms < self._next_run_ms:
            self._timer.wake()

    async def _on_timer(self) -> None:
        try:
            await self.tick()
            if self.clock.monotonic() - self._last_maintain >= _MAINTAIN_EVERY_S:
                self._last_maintain = self.clock.monotonic()
                await self.maintain()
        except WharfError:
            log.exception("queue timer failed; retrying on the next tick")

    async def close(self) -> None:
        """Stop the timer (waiting for a running tick), flush and close every queue log, then
        save what the durable queues' logs hold (a clean close: the next open opens none).
        Closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        if self._recovering is not None:
            self._recovering.cancel()
            await asyncio.gather(self._recovering, return_exceptions=True)
        await self._timer.close()
        if self._evicting is not None:
            await asyncio.gather(self._evicting, return_exceptions=True)
        summaries: _Summaries = {}
        for vhost in list(self._vhosts.values()):
            closed = await vhost.close()
            if closed:
                summaries[vhost.name] = closed
        await self.definitions.close()
        await save_summary(self.path / SUMMARIES, summaries, self._executor,
                           "every queue's logs")  # fmt: skip

    def _take_summaries(self) -> _Summaries | None:
        """What a clean close saved (None without it), deleted from the disk."""
        return take_summary(self.path / SUMMARIES, _Summaries, "every queue's logs")

    # -------------------------------------------------------------------- open queue logs

    def _queue_loaded(self, queue: Queue) -> None:
        """A durable queue's logs opened: note it, and close idle ones beyond the limit."""
        self._loaded[queue] = None
        self._evict_if_over()

    def _evict_if_over(self) -> None:
        """Start closing idle queues' logs when more than the limit are open (not while
        closing, and not without a running loop: the next pass looks then)."""
        if len(self._loaded) <= self._max_loaded or self._evicting is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._evicting = loop.create_task(self._evict())

    def _queue_dropped(self, queue: Queue) -> None:
        self._loaded.pop(queue, None)

    @property
    def open_queue_logs(self) -> int:
        """Durable queues whose logs are open now."""
        return len(self._loaded)

    async def _evict(self) -> None:
        """Close idle queues' logs, least recently opened first, a few at once, until the
        open ones are down to a share of the limit or every open queue was looked at once (a
        queue used since the last look is spared this time, and looked at again later)."""
        try:
            target = int(self._max_loaded * _EVICT_TO)
            budget = len(self._loaded)
            while len(self._loaded) > target and budget > 0:
                chosen: list[Queue] = []
                for queue in list(self._loaded):
                    if len(chosen) >= _EVICT_AT_ONCE or budget <= 0:
                        break
                    if len(self._loaded) <= target:
                        break
                    budget -= 1
                    del self._loaded[queue]
                    store = queue.store
                    if queue.deleted or not store.loaded:
                        continue
                    if store.used or not queue.unloadable:
                        store.used = False
                        self._loaded[queue] = None  # looked at again after the others
                        continue
                    chosen.append(queue)
                if chosen:
                    await asyncio.gather(*(self._unload(queue) for queue in chosen))
        finally:
            self._evicting = None

    async def _unload(self, queue: Queue) -> None:
        if not await queue.store.unload():
            if queue.store.loaded and not queue.deleted:
                self._loaded[queue] = None  # busy again meanwhile
