"""Virtual hosts: their exchanges, queues and bindings (the topology), declared and deleted.

How it works: a :class:`VirtualHost` keeps its exchanges, queues and delayed exchanges' held
messages in plain dicts and changes them on declare, delete, bind and unbind, checking AMQP's
rules (reserved ``amq.`` names, equivalent redeclaration, exclusivity). Bindings are also
indexed by destination, so deleting a queue or exchange drops its bindings without a scan.
Publishing goes through its :class:`~wharf.core.queues.router.Router`, which reads the same
dicts; a message its queues dead-letter is moved by its
:class:`~wharf.core.queues.dead_letter.DeadLetterer`.

Definitions (durable exchanges, queues, bindings) are saved (:mod:`wharf.core.queues.definitions`)
after every change, and restored by
:class:`~wharf.core.queues.registry.VhostRegistry`. Every change is journaled (``record``) in the
step that makes it in memory and then awaits its save, so the
declare-ok (or bind-ok, delete-ok) it leads to means the change survives a crash; a
redeclaration of something that already exists waits for the saves still under way, since its
declare-ok promises the same. Opening a durable queue's logs (and a delayed exchange's) runs on
the broker's fsync pool; while it runs, a second declaration of the same name waits for the
first one and then sees its queue. That opening, with the save that follows it, runs to its end
even if the declaring connection goes away meanwhile, so no log is left open unregistered and no
queue in memory is left out of the saved definitions. A new durable queue has no logs to open
(they are made by its first message): its declaration adds the queue and records it without
waiting, so only the wait for the journal's write can be cut short, and that write goes on.
Exclusive queues belong to an *owner* (a connection id of the front end's choosing) and are
deleted by :meth:`VirtualHost.connection_closed`.

A restart after a crash does not read back the durable queues' logs before the listeners
open: each queue whose logs exist and which no clean stop summarised is added empty and
:meth:`~wharf.core.queues.queue.Queue.recover_later`; :meth:`VirtualHost.recover_queues`
(run by the registry in the background) then reads them back on the fsync pool, a batch of
queues to a job, closing each queue's logs again as a clean stop would, and any use of a
queue before that reads back that queue first (see ``Queue.recover_later``).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import hashlib
import logging
import os
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import Executor
from functools import partial
from pathlib import Path
from typing import Any

import msgspec

from wharf.core.clock import Clock
from wharf.core.config import BrokerConfig
from wharf.core.durability import run_off_loop, run_to_end
from wharf.core.queues.args import QueueArgs, QueueType, first_difference, parse_queue_args
from wharf.core.queues.dead_letter import DeadLetterer, DeathReason, settle_when_durable
from wharf.core.queues.definitions import (
    Change,
    binding_entry,
    exchange_entry,
    queue_entry,
)
from wharf.core.queues.delayed import DelayedMessages
from wharf.core.queues.exchanges import (
    Binding,
    DelayedExchange,
    Destination,
    DestKind,
    Exchange,
    ExchangeType,
    make_exchange,
)
from wharf.core.queues.message import Message
from wharf.core.queues.queue import Queue
from wharf.core.queues.router import PublishResult, Router
from wharf.core.queues.store import (
    QueueStore,
    ReadBack,
    StoredMessage,
    StoreSummary,
    closed_store,
    holds_logs,
    memory_store,
    open_store,
)
from wharf.core.stats import HistogramFamily
from wharf.errors import (
    AccessRefusedError,
    NotFoundError,
    PreconditionError,
    ResourceLockedError,
    StorageError,
)

__all__ = ["VirtualHost"]

log = logging.getLogger(__name__)

# Queues a restart after a crash reads back in one job of the fsync pool (one job after
# another: the work is mostly Python, which threads would only share; each short enough that a
# use of a queue in it waits little).
_READ_BACK_BATCH = 32

STANDARD_EXCHANGES: tuple[tuple[str, ExchangeType], ...] = (
    ("amq.direct", ExchangeType.DIRECT),
    ("amq.fanout", ExchangeType.FANOUT),
    ("amq.topic", ExchangeType.TOPIC),
    ("amq.headers", ExchangeType.HEADERS),
    ("amq.match", ExchangeType.HEADERS),
)


def dir_name(name: str) -> str:
    """A file-system-safe, fixed-length directory name for a queue/exchange/vhost name."""
    return hashlib.sha256(name.encode("utf-8")).hexdigest()[:32]


class VirtualHost:
    """One AMQP virtual host; obtained from ``broker.vhosts[name]``.

    Counters: ``published`` (publishes received), ``unroutable`` (kept by its router).
    """

    def __init__(
        self,
        name: str,
        path: Path,
        config: BrokerConfig,
        clock: Clock,
        save: Callable[[], Awaitable[None]],
        saved: Callable[[], Awaitable[None]],
        fsync_latency: HistogramFamily[str] | None = None,
        executor: Executor | None = None,
        *,
        record: Callable[[Change], None] | None = None,
    ) -> None:
        """``record`` journals a change of the definitions (nothing is saved when None);
        ``save`` returns once every change recorded is on disk; ``saved`` returns once the
        saves under way are (see the module docstring)."""
        self.name = name
        self.path = path
        self._queues_dir = os.path.join(path, "queues")
        self._store_opened = self._queue_opened  # one callback shared by every store
        self.config = config
        self.clock = clock
        self._record = record
        self._save = save
        self._saved = saved
        self._fsync_latency = fsync_latency
        self._executor = executor
        # While the saved definitions are restored: nothing is journaled, and the names of the
        # queue directories there are (listed once; a queue without one has no logs yet).
        self.restoring = False
        self._queue_dirs: set[str] | None = None
        # While restoring after a clean stop: what each queue's closed logs hold, by name.
        self._closed: dict[str, QueueSummary] = {}
        # Queues a restart after a crash left to read back (recover_queues), oldest first.
        self._unrecovered: deque[Queue] = deque()
        # The queues that changed since the timer last found them with nothing to do (no
        # ready message, no x-expires, nothing to maintain): the only ones it looks at.
        self._active: dict[Queue, None] = {}
        # Queues and exchanges being declared while their logs open, by name.
        self._declaring_queues: dict[str, asyncio.Event] = {}
        self._declaring_exchanges: dict[str, asyncio.Event] = {}
        self.exchanges: dict[str, Exchange] = {}
        self.queues: dict[str, Queue] = {}
        self.delayed: dict[str, DelayedMessages] = {}
        # every binding by its destination, so deleting one needs no scan of the others
        self._bound: dict[Destination, dict[Binding, None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.wakeup: Callable[[], None] = lambda: None
        # a durable queue's logs opened, a queue deleted (the registry bounds how many queues
        # have their logs open)
        self.queue_loaded: Callable[[Queue], None] = lambda queue: None
        self.queue_dropped: Callable[[Queue], None] = lambda queue: None
        # a new deadline (ms): the timer looks again if it falls before the timer's next run
        self.wake_at: Callable[[int], None] = lambda deadline_ms: None
        self.router = Router(
            name, self.exchanges, self.queues, self.delayed, clock, lambda: self.wakeup()
        )
        self._dead_letters = DeadLetterer(self.router, self.exchanges, clock, self._spawn)
        default = make_exchange("", ExchangeType.DIRECT)
        self.exchanges[""] = default
        for ex_name, ex_type in STANDARD_EXCHANGES:
            self.exchanges[ex_name] = make_exchange(ex_name, ex_type)

    # --------------------------------------------------------------------------- exchanges

    def get_exchange(self, name: str) -> Exchange:
        try:
            return self.exchanges[name]
        except KeyError:
            raise NotFoundError(f"no exchange '{name}' in vhost '{self.name}'") from None

    async def declare_exchange(
        self,
        name: str,
        type_: str,
        *,
        durable: bool = True,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
        passive: bool = False,
    ) -> Exchange:
        """exchange.declare. Raises NotFoundError (passive, absent), AccessRefusedError
        (``amq.`` names), PreconditionError (redeclare with other settings, 406),
        UnknownExchangeTypeError (503)."""
        args = dict(arguments or {})
        await _declared(self._declaring_exchanges, name)
        existing = self.exchanges.get(name)
        if passive:
            if existing is None:
                raise NotFoundError(f"no exchange '{name}' in vhost '{self.name}'")
            return existing
        if existing is not None:
            if not existing.same_declaration(type_, durable, auto_delete, internal, args):
                raise PreconditionError(
                    f"inequivalent arg for exchange '{name}' in vhost '{self.name}': "
                    f"declared as type '{existing.type.value}' durable={existing.durable} "
                    f"auto_delete={existing.auto_delete} internal={existing.internal} "
                    f"with other arguments"
                )
            if existing.durable:
                await self._saved()
            return existing
        if name.startswith("amq.") or name == "":
            raise AccessRefusedError(f"exchange name '{name}' contains reserved prefix 'amq.'")
        exchange = make_exchange(
            name,
            type_,
            durable=durable,
            auto_delete=auto_delete,
            internal=internal,
            arguments=args,
        )
        if isinstance(exchange, DelayedExchange):
            adding = self._add_delayed(_Declaring(self._declaring_exchanges, name), exchange)
            await (run_to_end(adding) if durable else adding)
            return exchange
        self.exchanges[name] = exchange
        if durable:
            await self._save_change("exchange", partial(exchange_entry, self.name, exchange))
        return exchange

    async def _add_delayed(self, declaring: _Declaring, exchange: Exchange) -> None:
        """Open a delayed exchange's store (holding again what it kept), add the exchange and
        save it if durable (run to its end: see the module docstring)."""
        name = exchange.name
        with declaring:
            path = self.path / "delayed" / dir_name(name) if exchange.durable else None
            store = await self._open_store(path)
            held = DelayedMessages(store, durable=exchange.durable)
            await held.restore()
            store.start()
            self.delayed[name] = held
            self.exchanges[name] = exchange
        if exchange.durable:
            await self._save_change("exchange", partial(exchange_entry, self.name, exchange))

    async def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        """exchange.delete; raises PreconditionError when ``if_unused`` and bound (406)."""
        exchange = self.get_exchange(name)
        if name == "" or name.startswith("amq."):
            raise AccessRefusedError(f"cannot delete reserved exchange '{name}'")
        if if_unused and exchange.bindings:
            raise PreconditionError(f"exchange '{name}' in vhost '{self.name}' in use")
        await self._remove_exchange(exchange)

    async def _remove_exchange(self, exchange: Exchange) -> None:
        del self.exchanges[exchange.name]
        for binding in list(exchange.bindings):
            self._drop_binding(exchange, binding)
        self._unbind_destination((DestKind.EXCHANGE, exchange.name))
        held = self.delayed.pop(exchange.name, None)
        if exchange.durable:  # no saved binding involves a transient exchange
            await self._save_change("exchange.delete", partial(_named, self.name, exchange.name))
        if held is not None:
            held.removed = True
            await held.store.destroy()

    def _maybe_auto_delete(self, exchange: Exchange) -> None:
        if exchange.auto_delete and not exchange.bindings and exchange.name in self.exchanges:
            self._spawn(self._remove_exchange(exchange))

    # ------------------------------------------------------------------------------ queues

    def get_queue(self, name: str, owner: object | None = None) -> Queue:
        """The queue, checking exclusivity: NotFoundError (404), ResourceLockedError (405)."""
        queue = self.queues.get(name)
        if queue is None:
            raise NotFoundError(f"no queue '{name}' in vhost '{self.name}'")
        if queue.exclusive_owner is not None and queue.exclusive_owner != owner:
            raise ResourceLockedError(
                f"cannot obtain exclusive access to locked queue '{name}' in vhost "
                f"'{self.name}'. It could be originally declared on another connection or "
                "the exclusive property value does not match that of the original declaration."
            )
        return queue

    async def declare_queue(
        self,
        name: str,
        *,
        durable: bool = False,
        exclusive: bool = False,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        passive: bool = False,
        owner: object | None = None,
    ) -> Queue:
        """queue.declare. ``name`` "" asks for a server-named queue (amq.gen-...). ``owner``
        identifies the declaring connection (needed for ``exclusive``). Raises NotFoundError
        (passive, absent), ResourceLockedError (another owner's exclusive queue),
        AccessRefusedError (``amq.`` names), PreconditionError (bad or inequivalent
        arguments, 406). The queue reports ``message_count`` and ``consumer_count``."""
        args_map = dict(arguments or {})
        if passive:
            queue = self.get_queue(name, owner)
            queue.last_used_ms = self.clock.now_ms()
            await queue.recovered()  # its declare-ok says how many messages it holds
            return queue
        if name == "":
            name = "amq.gen-" + base64.urlsafe_b64encode(secrets.token_bytes(16)).decode(
                "ascii"
            ).rstrip("=")
        elif name.startswith("amq."):
            if name in self.queues:
                return self.get_queue(name, owner)
            raise AccessRefusedError(f"queue name '{name}' contains reserved prefix 'amq.'")
        parsed = parse_queue_args(args_map)
        if parsed.queue_type is QueueType.QUORUM:
            if not durable or exclusive or auto_delete:
                raise PreconditionError(
                    f"invalid property for quorum queue '{name}': quorum queues must be "
                    "durable, not exclusive and not auto-delete"
                )
        await _declared(self._declaring_queues, name)
        existing = self.queues.get(name)
        if existing is not None:
            self.get_queue(name, owner)
            difference = _queue_difference(existing, durable, exclusive, auto_delete, parsed)
            if difference is not None:
                what, received, current = difference
                raise PreconditionError(
                    f"inequivalent arg '{what}' for queue '{name}' in vhost '{self.name}': "
                    f"received {received} but current is {current}"
                )
            existing.last_used_ms = self.clock.now_ms()
            await existing.recovered()
            if existing.store.durable:
                await self._saved()
            return existing
        if exclusive and owner is None:
            raise PreconditionError("an exclusive queue needs an owner")
        persistent = durable and not exclusive
        path = os.path.join(self._queues_dir, dir_name(name)) if persistent else None
        opens = path is not None and self._opens_logs(name, path)
        adding = self._add_queue(
            _Declaring(self._declaring_queues, name),
            name,
            durable=durable,
            auto_delete=auto_delete,
            owner=owner if exclusive else None,
            arguments=args_map,
            args=parsed,
            path=path,
            opens=opens,
        )
        # (restoring, no declarer can go away: see the module docstring)
        return await (run_to_end(adding) if opens and not self.restoring else adding)

    def _opens_logs(self, name: str, path: str) -> bool:
        """Whether adding the durable queue ``name`` (directory ``path``) opens its logs on
        the pool: they exist and no clean stop's summary describes them."""
        if name in self._closed:
            return False
        if self._queue_dirs is not None:  # a restart's listing: no stat per queue
            return os.path.basename(path) in self._queue_dirs and holds_logs(path)
        return holds_logs(path)

    async def _add_queue(
        self,
        declaring: _Declaring,
        name: str,
        *,
        durable: bool,
        auto_delete: bool,
        owner: object | None,
        arguments: dict[str, Any],
        args: QueueArgs,
        path: str | None,
        opens: bool,
    ) -> Queue:
        """Make a queue's store in ``path`` (in memory when None; ``opens``: its logs exist
        and are opened, recovering what they hold), add the queue and save it if it is kept
        across restarts (run to its end when ``opens``: see the module docstring). Restoring,
        logs that ``opens`` are left to read back later (see the module docstring)."""
        with declaring:
            closed = self._closed.pop(name, None) if path is not None else None
            recovered: list[StoredMessage] = []
            later = opens and self.restoring
            if later:  # left by a crash: read back after the listeners open
                store = await self._open_store(path, new=True)
            elif closed is not None and path is not None:  # a clean stop's summary: no log opened
                store = closed_store(path, closed.store, self.config, self.clock,
                                     self._fsync_latency, self._executor)
                recovered = [
                    StoredMessage(offset, seq, None, expires_at, count, priority, size, stored)
                    for offset, seq, priority, expires_at, count, size, stored in closed.entries
                ]
            else:
                store = await self._open_store(path, new=not opens)
                recovered = await store.recover(keep_bodies=False)  # bodies are read when due
            queue = Queue(
                self.name,
                name,
                durable=durable,
                auto_delete=auto_delete,
                exclusive_owner=owner,
                arguments=arguments,
                args=args,
                store=store,
                clock=self.clock,
                hooks=self,
                segment_bytes=self.config.queue_segment_bytes,
                resident_bytes=self.config.queue_resident_bytes,
            )
            queue.restore(recovered)
            if later:
                queue.recover_later()
                self._unrecovered.append(queue)
            store.start()
            if path is not None:
                store.on_open = self._store_opened
                store.owner = queue
                if store.loaded:
                    self.queue_loaded(queue)
            self.queues[name] = queue
            self._active[queue] = None  # the timer looks at it once, at least
        deadline = queue.next_deadline()
        if deadline is not None:  # else the timer has nothing new to look at
            self.wake_at(deadline)
        if path is not None:
            await self._save_change("queue", partial(queue_entry, self.name, queue))
        return queue

    def _queue_opened(self, store: QueueStore) -> None:
        queue = store.owner
        if isinstance(queue, Queue):
            self.queue_loaded(queue)

    async def _save_change(self, op: str, entry: Callable[[], dict[str, Any]]) -> None:
        """Journal the change ``op`` of ``entry()`` (just made in memory) and return once it is
        on disk; nothing while the definitions are being restored (they are what is on disk)."""
        if self.restoring:
            return
        if self._record is not None:
            self._record({"op": op, **entry()})
        await self._save()

    async def _open_store(self, path: str | Path | None, *, new: bool = False) -> QueueStore:
        """A durable store in ``path`` (its logs opened on the fsync pool), in memory if None;
        ``new``: known to have no logs yet."""
        if path is None:
            return memory_store(self.config, self.clock)
        return await open_store(path, self.config, self.clock, self._fsync_latency,
                                self._executor, new=new)

    def begin_restore(self, closed: dict[str, QueueSummary] | None = None) -> None:
        """The saved definitions are being restored into this vhost (see ``restoring``);
        ``closed``: what a clean stop left in each durable queue's logs, by queue name."""
        self.restoring = True
        self._closed = closed or {}
        try:
            self._queue_dirs = set(os.listdir(self._queues_dir))
        except FileNotFoundError:
            self._queue_dirs = set()

    def end_restore(self) -> None:
        self.restoring = False
        self._queue_dirs = None
        self._closed = {}

    @property
    def unrecovered(self) -> int:
        """Queues a restart after a crash left to read back (see the module docstring)."""
        return len(self._unrecovered)

    async def recover_queues(self) -> None:
        """Read back the queues a restart after a crash left unread, a batch at a time on
        the fsync pool, each queue's logs closed again as after a clean stop (a failure is
        logged and leaves that queue to be read back at its first use)."""
        pending = self._unrecovered
        while pending:
            jobs: list[tuple[Queue, concurrent.futures.Future[ReadBack]]] = []
            while pending and len(jobs) < _READ_BACK_BATCH:
                queue = pending.popleft()
                recovery = queue.begin_recovery()
                if recovery is not None:  # (else read back, by its use, or deleted)
                    jobs.append((queue, recovery))
            if not jobs:
                continue
            await run_off_loop(self._executor, partial(_read_back_batch, jobs))
            for queue, recovery in jobs:
                try:
                    queue.end_recovery(recovery)
                except StorageError as exc:
                    log.error("cannot read back queue '%s' in vhost '%s' (it is read at its"
                              " first use): %s", queue.name, self.name, exc)

    async def delete_queue(
        self,
        name: str,
        *,
        if_unused: bool = False,
        if_empty: bool = False,
        owner: object | None = None,
    ) -> int:
        """queue.delete; returns the number of messages deleted. PreconditionError (406) when
        ``if_unused`` and consumed or ``if_empty`` with ready messages (unacknowledged ones do
        not count, as in RabbitMQ). Consumers get
        :meth:`Consumer.cancelled <wharf.core.queues.consumers.Consumer.cancelled>`."""
        queue = self.get_queue(name, owner)
        await queue.recovered()  # (its delete-ok says how many messages it held)
        if if_unused and queue.consumer_count:
            raise PreconditionError(f"queue '{name}' in vhost '{self.name}' in use")
        if if_empty and queue.message_count:
            raise PreconditionError(f"queue '{name}' in vhost '{self.name}' not empty")
        count = queue.message_count
        self._detach_queue(queue)
        await self._forget_queue(queue)
        return count

    async def _forget_queue(self, queue: Queue) -> None:
        """After :meth:`_detach_queue`: save the definitions without it, delete its logs."""
        if queue.store.durable:
            await self._save_change("queue.delete", partial(_named, self.name, queue.name))
        await queue.store.destroy()

    def _detach_queue(self, queue: Queue) -> None:
        """Remove a queue and its bindings from the vhost and cancel its consumers (the
        synchronous part of deletion; :meth:`_forget_queue` is the rest)."""
        self.queues.pop(queue.name, None)
        self._active.pop(queue, None)
        self.queue_dropped(queue)
        self._unbind_destination((DestKind.QUEUE, queue.name))
        for consumer in queue.detach():
            consumer.cancelled(queue)

    async def purge_queue(self, name: str, owner: object | None = None) -> int:
        """queue.purge: drop ready messages; returns how many."""
        queue = self.get_queue(name, owner)
        await queue.recovered()
        return queue.purge()

    async def connection_closed(self, owner: object) -> None:
        """Delete the exclusive queues ``owner`` declared."""
        for queue in [q for q in self.queues.values() if q.exclusive_owner == owner]:
            await self.delete_queue(queue.name, owner=owner)

    # ---------------------------------------------------------------------------- bindings

    async def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        owner: object | None = None,
    ) -> None:
        """queue.bind (idempotent). NotFoundError (404) for a missing queue or exchange;
        AccessRefusedError (403) for the default exchange."""
        ex = self._bindable(exchange)  # the default exchange is refused first, as in RabbitMQ
        q = self.get_queue(queue, owner)
        binding = Binding.of(exchange, queue, DestKind.QUEUE, routing_key, arguments)
        if q.store.durable and ex.durable:
            if self._add_binding(ex, binding):
                await self._save_change("bind", partial(binding_entry, self.name, binding))
            else:
                await self._saved()  # bound already: maybe by a bind whose save runs
        else:
            self._add_binding(ex, binding)

    async def unbind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        owner: object | None = None,
    ) -> None:
        """queue.unbind (absent binding: no error, as in RabbitMQ)."""
        ex = self._bindable(exchange)
        q = self.get_queue(queue, owner)
        binding = Binding.of(exchange, queue, DestKind.QUEUE, routing_key, arguments)
        if self._drop_binding(ex, binding):
            self._maybe_auto_delete(ex)
            if q.store.durable and ex.durable:
                await self._save_change("unbind", partial(binding_entry, self.name, binding))

    async def bind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """exchange.bind: messages routed by ``source`` also go through ``destination``."""
        dest = self._bindable(destination)
        src = self._bindable(source)
        binding = Binding.of(source, destination, DestKind.EXCHANGE, routing_key, arguments)
        if src.durable and dest.durable:
            if self._add_binding(src, binding):
                await self._save_change("bind", partial(binding_entry, self.name, binding))
            else:
                await self._saved()  # bound already: maybe by a bind whose save runs
        else:
            self._add_binding(src, binding)

    async def unbind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        """exchange.unbind."""
        dest = self._bindable(destination)
        src = self._bindable(source)
        binding = Binding.of(source, destination, DestKind.EXCHANGE, routing_key, arguments)
        if self._drop_binding(src, binding):
            self._maybe_auto_delete(src)
            if src.durable and dest.durable:
                await self._save_change("unbind", partial(binding_entry, self.name, binding))

    def _add_binding(self, exchange: Exchange, binding: Binding) -> bool:
        added = exchange.bind(binding)
        if added:
            self._bound.setdefault(binding.target, {})[binding] = None
        return added

    def _drop_binding(self, exchange: Exchange, binding: Binding) -> bool:
        removed = exchange.unbind(binding)
        if removed:
            bound = self._bound.get(binding.target)
            if bound is not None:
                bound.pop(binding, None)
                if not bound:
                    del self._bound[binding.target]
        return removed

    def _unbind_destination(self, target: Destination) -> None:
        """Remove every binding to ``target`` (a queue or exchange being deleted)."""
        for binding in list(self._bound.pop(target, ())):
            source = self.exchanges.get(binding.source)
            if source is not None and source.unbind(binding):
                self._maybe_auto_delete(source)

    def _bindable(self, name: str) -> Exchange:
        if name == "":
            raise AccessRefusedError("operation not permitted on the default exchange")
        return self.get_exchange(name)

    def bindings(self) -> Iterator[Binding]:
        """Every explicit binding (the default exchange's implicit ones are not listed)."""
        for name, exchange in self.exchanges.items():
            if name:
                yield from exchange.bindings

    # ----------------------------------------------------------------------------- publish

    @property
    def published(self) -> int:
        return self.router.published

    @property
    def unroutable(self) -> int:
        return self.router.unroutable

    def publish_nowait(self, message: Message) -> PublishResult:
        """Route and enqueue ``message`` now (keeping publish order); await
        :meth:`PublishResult.wait_durable` before confirming. NotFoundError (404) for a missing
        exchange, AccessRefusedError (403) for an internal one."""
        return self.router.publish(message)

    async def publish(self, message: Message) -> PublishResult:
        """:meth:`publish_nowait`, then wait for durability."""
        result = self.router.publish(message)
        await result.wait_durable()
        return result

    # ------------------------------------------------------------------- hooks from queues

    def dead_letter(
        self, queue: Queue, message: Message, reason: DeathReason, offset: int | None
    ) -> None:
        """Move a message dead-lettered by ``queue`` (see
        :meth:`DeadLetterer.move <wharf.core.queues.dead_letter.DeadLetterer.move>`)."""
        self._dead_letters.move(queue, message, reason, offset)

    def queue_active(self, queue: Queue) -> None:
        self._active[queue] = None

    def queue_unused(self, queue: Queue) -> None:
        """An auto-delete queue lost its last consumer: delete it."""
        if self.queues.get(queue.name) is not queue:
            return
        self._detach_queue(queue)
        self._spawn(self._forget_queue(queue))

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------------------ timers

    def next_deadline(self) -> int | None:
        deadlines = [d for q in self._active if (d := q.next_deadline()) is not None]
        deadlines += [d for h in self.delayed.values() if (d := h.next_due()) is not None]
        return min(deadlines) if deadlines else None

    async def tick(self) -> None:
        """Release due delayed messages, expire messages at queue heads, delete idle queues."""
        now = self.clock.now_ms()
        for name, held in list(self.delayed.items()):
            exchange = self.exchanges.get(name)
            if exchange is None:
                continue
            due = held.take_due(now)
            if not due:
                continue
            copies = PublishResult()
            for _, message in due:
                queues: set[str] = set()
                self.router.route(exchange, message, queues, None, released=True)
                self.router.deliver_to(queues, message, copies)
            settle_when_durable(held.settle, [offset for offset, _ in due], copies, self._spawn)
        for queue in list(self._active):
            if queue.deleted or (queue.timeless and not queue.needs_maintenance):
                del self._active[queue]  # until it changes again
                continue
            if queue.timeless:
                continue  # only maintenance to do
            if queue.idle_expired(now):
                await self.delete_queue(queue.name, owner=queue.exclusive_owner)
            else:
                queue.tick(now)

    async def maintain(self) -> None:
        """Reclaim log space of every queue and delayed exchange."""
        for queue in list(self._active):
            if not queue.deleted and queue.needs_maintenance:
                await queue.maintain()
        for held in list(self.delayed.values()):
            await held.maintain()

    async def close(self) -> dict[str, QueueSummary]:
        """Flush and close every log (definitions are already on disk); returns what each
        durable queue's logs hold, for a restart that opens none (queues whose logs hold
        nothing, or too much to list, are left out)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))
        closed: dict[str, QueueSummary] = {}
        for queue in self.queues.values():
            if queue.needs_maintenance:
                await queue.maintain()
            await queue.store.flush()
            summary = _closed_summary(queue)
            if summary is not None:
                closed[queue.name] = summary
            await queue.store.close()
        for held in self.delayed.values():
            await held.store.close()
        return closed


async def _declared(declaring: dict[str, asyncio.Event], name: str) -> None:
    """Wait until no declaration of ``name`` is opening logs (see the module docstring)."""
    while (opening := declaring.get(name)) is not None:
        await opening.wait()


class _Declaring:
    """Marks ``name`` as being declared in ``declaring`` from its creation (by the declaring
    caller, before anything is awaited) to the end of the ``with`` block that opens its logs."""

    def __init__(self, declaring: dict[str, asyncio.Event], name: str) -> None:
        self._declaring = declaring
        self._name = name
        self._opening = asyncio.Event()
        declaring[name] = self._opening

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        del self._declaring[self._name]
        self._opening.set()


def _read_back_batch(jobs: list[tuple[Queue, concurrent.futures.Future[ReadBack]]]) -> None:
    """On the fsync pool: each queue's :meth:`Queue.recover_into`, in turn."""
    for queue, recovery in jobs:
        queue.recover_into(recovery)


class QueueSummary(msgspec.Struct, array_like=True, frozen=True):
    """What a clean stop left in a durable queue's logs: see :func:`_closed_summary`."""

    store: StoreSummary
    entries: list[tuple[int, int, int, int | None, int, int, int]]


# A queue holding more live messages than this is recovered from its logs at start (its
# summary would cost more to save and read than the logs take to replay).
_MAX_SUMMARY_ENTRIES = 10_000


def _closed_summary(queue: Queue) -> QueueSummary | None:
    """The summary of a durable queue whose logs exist, after its last flush; None for a
    queue without logs, with too many messages, or with a dead-lettering unsettled."""
    if queue.store.path is None:
        return None
    summary = queue.store.summary()
    if summary is None:
        return None
    entries = queue.kept_entries()
    if entries is None or len(entries) > _MAX_SUMMARY_ENTRIES:
        return None
    return QueueSummary(summary, entries)


def _named(vhost: str, name: str) -> dict[str, Any]:
    """The entry of a deletion: what it deletes."""
    return {"vhost": vhost, "name": name}


def _queue_difference(
    queue: Queue, durable: bool, exclusive: bool, auto_delete: bool, args: QueueArgs
) -> tuple[str, str, str] | None:
    """What a redeclaration changes, as ``(property or x-argument, received, current)``."""
    for what, received, current in (
        ("durable", durable, queue.durable),
        ("exclusive", exclusive, queue.exclusive),
        ("auto_delete", auto_delete, queue.auto_delete),
    ):
        if received != current:
            return what, str(received).lower(), str(current).lower()
    return first_difference(queue.args, args)
