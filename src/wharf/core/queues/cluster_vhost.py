"""A virtual host of the cluster, as one node serves it: a cache of the definitions in the
database, and publishes that become rows.

How it works: :class:`ClusterVirtualHost` is the single-node
:class:`~wharf.core.queues.vhost.VirtualHost` whose ``exchanges`` and ``queues`` dicts are a
cache of the cluster's tables (:mod:`wharf.cluster.queues.definitions`), rebuilt in place by
:meth:`apply` whenever the node reloads them (a notification, a change made here, a periodic
refresh). Its router reads that cache as it reads the local tables. Each change (declare,
delete, bind, unbind, purge) is a transaction first; the node then reloads, so the answer
(declare-ok...) goes out after the commit and with this node's cache up to date. A declaration
inserts ``ON CONFLICT DO NOTHING`` and compares what is there with what was asked (406 when
they differ), as the single-node vhost compares with its dict. A passive declaration that
misses reloads once before answering 404, since another node may have declared it a moment ago.

All exchanges and queues are kept in the database, durable or not (a cluster has no restart
that would drop transient ones); an exclusive queue belongs to a connection of a node's epoch
and goes away with the connection or, when the node dies, by the sweep. Every queue argument
of single-node mode holds here too (consumers: :mod:`wharf.cluster.queues.consumers`).
Dead-lettered copies are routed here too (:meth:`ClusterVirtualHost.dead_letter_rows`), for the
transaction that deletes the original (:mod:`wharf.core.queues.cluster_dead_letter`).

A publish is routed on the cache, then handed to the node's group-committing writer as one row
per queue reached, and one held row per delayed exchange that holds it
(:mod:`wharf.core.queues.cluster_delayed`); its :class:`~wharf.core.queues.router.PublishResult`
waits for that commit, which is what a publisher confirm awaits; a publish that a full
``reject-publish(-dlx)`` queue refused in that commit fails its wait (a nack) and is marked
``rejected``.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from wharf.cluster.queues.dead_letters import DeadMessage
from wharf.cluster.queues.definitions import BindingRow, ExchangeRow, QueueRow
from wharf.cluster.queues.held import NewHeld
from wharf.cluster.queues.messages import NewMessage
from wharf.cluster.queues.replies import Reply
from wharf.core.queues.args import QueueType, parse_queue_args
from wharf.core.queues.cluster_delayed import ClusterRouter
from wharf.core.queues.cluster_queue import ClusterQueue
from wharf.core.queues.dead_letter import DeathReason, add_death, is_cycle
from wharf.core.queues.definitions import decode_arguments, encode_arguments
from wharf.core.queues.direct_reply import REPLY_PREFIX, reply_broker
from wharf.core.queues.exchanges import Binding, DestKind, Exchange, make_exchange
from wharf.core.queues.message import Message
from wharf.core.queues.queue import Queue
from wharf.core.queues.router import PublishResult, RefusedAtCommitError
from wharf.core.queues.store import MAX_MESSAGE_BYTES
from wharf.core.queues.vhost import QueueSummary, VirtualHost
from wharf.errors import AccessRefusedError, NotFoundError, PreconditionError

if TYPE_CHECKING:
    from wharf.core.queues.cluster_registry import QueueEngine

__all__ = ["ClusterVirtualHost", "encode_sorted"]


def encode_sorted(arguments: Mapping[str, Any] | None) -> str:
    """An argument table as stored: sorted by key, so equal tables are equal strings."""
    return encode_arguments(dict(sorted((arguments or {}).items())))


class _ForeignOwner:
    """The owner of an exclusive queue declared by another node or epoch: no local
    connection is it."""

    __slots__ = ("node", "token")

    def __init__(self, node: str, token: str) -> None:
        self.node = node
        self.token = token


class ClusterVirtualHost(VirtualHost):
    """One virtual host of the cluster on this node; see the module docstring."""

    def __init__(self, name: str, engine: QueueEngine) -> None:
        async def nothing() -> None:
            return None

        super().__init__(
            name, engine.path, engine.config, engine.clock, nothing, nothing
        )
        self._engine = engine
        self.by_id: dict[int, ClusterQueue] = {}
        # reply addresses name this node, so that other nodes can forward replies here
        self.router.replies.node_prefix = f"n{engine.node.broker_id}."
        # routes publishes; its delayed exchanges note holds (rows) instead of keeping them
        self._routing = ClusterRouter(
            name, self.exchanges, self.queues, self.delayed, self.clock, lambda: None
        )

    # ------------------------------------------------------------------------- the cache

    def apply(
        self, exchanges: list[ExchangeRow], queues: list[QueueRow], bindings: list[BindingRow]
    ) -> None:
        """Make the cache what the database holds for this vhost."""
        self._apply_exchanges(exchanges)
        self._apply_queues(queues)
        self._apply_bindings(bindings)

    def _apply_exchanges(self, rows: list[ExchangeRow]) -> None:
        wanted = {row.name for row in rows}
        for name in list(self.exchanges):
            if name and not name.startswith("amq.") and name not in wanted:
                del self.exchanges[name]
        for row in rows:
            args = decode_arguments(row.arguments)
            known = self.exchanges.get(row.name)
            if known is None or not known.same_declaration(
                row.type, row.durable, row.auto_delete, row.internal, args
            ):
                self.exchanges[row.name] = make_exchange(
                    row.name, row.type, durable=row.durable, auto_delete=row.auto_delete,
                    internal=row.internal, arguments=args,
                )  # fmt: skip

    def _apply_queues(self, rows: list[QueueRow]) -> None:
        by_name = {row.name: row for row in rows}
        for name, queue in list(self.queues.items()):
            row = by_name.get(name)
            if not isinstance(queue, ClusterQueue) or row is None or row.id != queue.queue_id:
                self._drop_queue(queue)
        for row in rows:
            if row.name not in self.queues:
                queue = self._make_queue(row)
                self.queues[row.name] = queue
                self.by_id[row.id] = queue

    def _apply_bindings(self, rows: list[BindingRow]) -> None:
        desired: dict[str, set[Binding]] = {}
        for b in rows:
            desired.setdefault(b.source, set()).add(
                Binding.of(b.source, b.destination, DestKind(b.kind), b.routing_key,
                           decode_arguments(b.arguments))
            )  # fmt: skip
        for name, exchange in self.exchanges.items():
            if not name:
                continue
            want = desired.get(name, set())
            for binding in list(exchange.bindings):
                if binding not in want:
                    exchange.unbind(binding)
            for binding in want:
                if binding not in exchange.bindings:
                    exchange.bind(binding)

    def _make_queue(self, row: QueueRow) -> ClusterQueue:
        arguments = decode_arguments(row.arguments)
        return ClusterQueue(
            self.name,
            row.name,
            row.id,
            durable=row.durable,
            auto_delete=row.auto_delete,
            exclusive_owner=self._owner_of(row),
            arguments=arguments,
            args=parse_queue_args(arguments),
            config=self.config,
            clock=self.clock,
            hooks=self,
            engine=self._engine,
        )

    def _owner_of(self, row: QueueRow) -> object | None:
        if row.owner_epoch is None:
            return None
        token = row.owner_connection or ""
        if row.owner_node == self._engine.node_id and row.owner_epoch == self._engine.epoch():
            owner = self._engine.owners.get(token)
            if owner is not None:
                return owner
        return _ForeignOwner(row.owner_node or "", token)

    def _drop_queue(self, queue: Queue) -> None:
        self.queues.pop(queue.name, None)
        if isinstance(queue, ClusterQueue):
            self.by_id.pop(queue.queue_id, None)
        for consumer in queue.detach():
            consumer.cancelled(queue)

    async def _found_queue(self, name: str, owner: object | None) -> Queue:
        if name not in self.queues:
            await self._engine.refresh()
        return self.get_queue(name, owner)

    async def _bindable_found(self, name: str) -> Exchange:
        if name == "":
            return self._bindable(name)  # refused (403), as in RabbitMQ
        return await self._found_exchange(name)

    async def _found_exchange(self, name: str) -> Exchange:
        if name not in self.exchanges:
            await self._engine.refresh()
        return self.get_exchange(name)

    # --------------------------------------------------------------------------- exchanges

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
        args = dict(arguments or {})
        if passive:
            return await self._found_exchange(name)
        if name == "" or name.startswith("amq."):
            return await super().declare_exchange(
                name, type_, durable=durable, auto_delete=auto_delete, internal=internal,
                arguments=args,
            )  # fmt: skip
        make_exchange(name, type_, arguments=args)  # an unknown type is refused here (503)
        row = ExchangeRow(self.name, name, type_, durable, auto_delete, internal,
                          encode_sorted(args))  # fmt: skip
        await self._engine.declare_exchange(row)
        await self._engine.refresh()
        exchange = self.get_exchange(name)
        if not exchange.same_declaration(type_, durable, auto_delete, internal, args):
            raise PreconditionError(
                f"inequivalent arg for exchange '{name}' in vhost '{self.name}': declared as "
                f"type '{exchange.type.value}' durable={exchange.durable} "
                f"auto_delete={exchange.auto_delete} internal={exchange.internal} "
                "with other arguments"
            )
        return exchange

    async def delete_exchange(self, name: str, *, if_unused: bool = False) -> None:
        exchange = await self._found_exchange(name)
        if name == "" or name.startswith("amq."):
            raise AccessRefusedError(f"cannot delete reserved exchange '{name}'")
        if if_unused and exchange.bindings:
            raise PreconditionError(f"exchange '{name}' in vhost '{self.name}' in use")
        await self._remove_exchange(exchange)

    async def _remove_exchange(self, exchange: Exchange) -> None:
        await self._engine.delete_exchange(self.name, exchange.name)
        await self._engine.refresh()

    # ------------------------------------------------------------------------------ queues

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
        args_map = dict(arguments or {})
        if passive:
            queue = await self._found_queue(name, owner)
            await self._count(queue)
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
        if parsed.queue_type is QueueType.QUORUM and (not durable or exclusive or auto_delete):
            raise PreconditionError(
                f"invalid property for quorum queue '{name}': quorum queues must be "
                "durable, not exclusive and not auto-delete"
            )
        row = QueueRow(0, self.name, name, durable, auto_delete, encode_sorted(args_map),
                       delivery_limit=parsed.delivery_limit, max_length=parsed.max_length,
                       max_length_bytes=parsed.max_length_bytes,
                       single_active=parsed.single_active_consumer,
                       expires_ms=parsed.expires_ms)  # fmt: skip
        if exclusive:
            if owner is None:
                raise PreconditionError("an exclusive queue needs an owner")
            token = self._engine.owner_token(owner)
            epoch = self._engine.lease_epoch()
            row = replace(row, owner_node=self._engine.node_id, owner_epoch=epoch,
                          owner_connection=token)  # fmt: skip
        found, created = await self._engine.declare_queue(row)
        await self._engine.refresh()
        queue = self.get_queue(name, owner)
        if not created and (
            found.durable != durable
            or found.auto_delete != auto_delete
            or (found.owner_epoch is not None) != exclusive
            or parse_queue_args(decode_arguments(found.arguments)) != parsed
        ):
            raise PreconditionError(
                f"inequivalent arg for queue '{name}' in vhost '{self.name}': durable, "
                "exclusive, auto_delete or x-arguments differ from the original declaration"
            )
        queue.last_used_ms = self.clock.now_ms()
        await self._count(queue)
        return queue

    async def _count(self, queue: Queue) -> None:
        """Read what declare-ok reports (and renew an x-expires queue's use)."""
        if isinstance(queue, ClusterQueue):
            queue.ready_in_db, queue.consumers_elsewhere = await self._engine.counts(
                queue.queue_id
            )

    async def delete_queue(
        self,
        name: str,
        *,
        if_unused: bool = False,
        if_empty: bool = False,
        owner: object | None = None,
    ) -> int:
        queue = await self._found_queue(name, owner)
        if if_unused:
            await self._count(queue)
        if if_unused and queue.consumer_count:
            raise PreconditionError(f"queue '{name}' in vhost '{self.name}' in use")
        if if_empty:
            await self._count(queue)
            if queue.message_count:
                raise PreconditionError(f"queue '{name}' in vhost '{self.name}' not empty")
        assert isinstance(queue, ClusterQueue)
        count = await self._engine.delete_queue(queue.queue_id)
        self._drop_queue(queue)
        await self._engine.refresh()
        return count

    async def purge_queue(self, name: str, owner: object | None = None) -> int:
        queue = await self._found_queue(name, owner)
        assert isinstance(queue, ClusterQueue)
        return queue.purge() + await self._engine.purge(queue.queue_id)

    async def connection_closed(self, owner: object) -> None:
        await super().connection_closed(owner)
        self._engine.forget_owner(owner)

    def queue_unused(self, queue: Queue) -> None:
        """An auto-delete queue lost its last consumer *here*: the transaction that removes
        the last consumer's registration in the cluster deletes it (cluster_queue.py)."""

    def queue_active(self, queue: Queue) -> None:
        """Nothing to note: the cluster's queues keep no logs of their own to maintain."""

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
        await self._bindable_found(exchange)
        await self._found_queue(queue, owner)
        await self._engine.bind(
            BindingRow(self.name, exchange, DestKind.QUEUE.value, queue, routing_key,
                       encode_sorted(arguments))
        )  # fmt: skip
        await self._engine.refresh()

    async def unbind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        owner: object | None = None,
    ) -> None:
        self._bindable(exchange)
        await self._found_queue(queue, owner)
        await self._unbind(
            BindingRow(self.name, exchange, DestKind.QUEUE.value, queue, routing_key,
                       encode_sorted(arguments))
        )  # fmt: skip

    async def bind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        await self._bindable_found(destination)
        await self._bindable_found(source)
        await self._engine.bind(
            BindingRow(self.name, source, DestKind.EXCHANGE.value, destination, routing_key,
                       encode_sorted(arguments))
        )  # fmt: skip
        await self._engine.refresh()

    async def unbind_exchange(
        self,
        destination: str,
        source: str,
        routing_key: str,
        arguments: Mapping[str, Any] | None = None,
    ) -> None:
        self._bindable(destination)
        self._bindable(source)
        await self._unbind(
            BindingRow(self.name, source, DestKind.EXCHANGE.value, destination, routing_key,
                       encode_sorted(arguments))
        )  # fmt: skip

    async def _unbind(self, row: BindingRow) -> None:
        if await self._engine.unbind(row):
            await self._engine.refresh()
            source = self.exchanges.get(row.source)
            if source is not None and source.auto_delete and not source.bindings:
                await self._remove_exchange(source)

    # ----------------------------------------------------------------------------- publish

    def publish_nowait(self, message: Message) -> PublishResult:
        """Route on the cached definitions and hand one row per queue to the node's writer;
        the result waits for its commit. NotFoundError (404), AccessRefusedError (403) as in
        single-node mode; PreconditionError (406) for a body over the largest size."""
        router = self.router
        exchange = self.exchanges.get(message.exchange)
        if exchange is None:
            raise NotFoundError(f"no exchange '{message.exchange}' in vhost '{self.name}'")
        if exchange.internal:
            raise AccessRefusedError(
                f"cannot publish to internal exchange '{message.exchange}' in vhost '{self.name}'"
            )
        size = len(message.body)
        if size > MAX_MESSAGE_BYTES:
            raise PreconditionError(
                f"message size {size} is larger than the maximum {MAX_MESSAGE_BYTES}"
            )
        router.published += 1
        names: set[str] = set()
        holding: list[tuple[str, int]] = []
        if exchange.name == "":
            exchange.messages_in += 1
            if message.routing_key in self.queues:
                names.add(message.routing_key)
                exchange.messages_out += 1
            elif message.routing_key.startswith(REPLY_PREFIX):
                return self._reply(exchange, message)
        else:
            holding = self._routing.route_holding(exchange, message, names)
        result = PublishResult(routed=bool(names) or bool(holding))
        if not result.routed:
            router.unroutable += 1
            return result
        rows = self.rows_for(names, message)
        result.queues.extend(sorted(names))
        held = [
            NewHeld(self.name, at, delay, message.exchange, message.routing_key,
                    message.properties, message.body)
            for at, delay in holding
        ]  # fmt: skip
        committed = self._engine.publish(rows, held)
        queues, vhost = result.queues, self.name  # not the result: no cycle through it

        async def wait(_: int) -> None:
            if not await asyncio.shield(committed):
                raise RefusedAtCommitError(
                    f"a queue of {', '.join(queues)} in vhost '{vhost}' is full "
                    "(x-overflow reject-publish)"
                )

        result._waits.append((wait, 0))
        return result

    def _reply(self, exchange: Exchange, message: Message) -> PublishResult:
        """A publish to a direct reply address: handed to its consumer when that is on this
        node, forwarded to its node when the address names another one (routed once the
        forward committed), unroutable otherwise."""
        address = message.routing_key
        if self.router.replies.deliver(address, message):
            exchange.messages_out += 1
            return PublishResult(routed=True)
        owner = reply_broker(address)
        if owner is None or owner == self._engine.node.broker_id:
            self.router.unroutable += 1
            return PublishResult()
        exchange.messages_out += 1
        forwarded = self._engine.forward_reply(
            owner, Reply(self.name, address, message.properties, message.body)
        )
        result = PublishResult(routed=True)

        async def wait(_: int) -> None:
            await asyncio.shield(forwarded)

        result._waits.append((wait, 0))
        return result

    def rows_for(
        self,
        names: set[str],
        message: Message,
        body_key: str | None = None,
        body_size: int | None = None,
    ) -> list[NewMessage]:
        """One row per queue of ``names`` (in name order) for ``message``; with ``body_key``,
        its body is that object (``body_size`` bytes)."""
        rows: list[NewMessage] = []
        for name in sorted(names):
            rows.append(self._row(self.queues[name], message, body_key, body_size))
        return rows

    def _row(
        self,
        queue: Queue,
        message: Message,
        body_key: str | None = None,
        body_size: int | None = None,
    ) -> NewMessage:
        """The row ``message`` becomes in ``queue``; with ``body_key``, its body is that
        object (``body_size`` bytes)."""
        assert isinstance(queue, ClusterQueue)
        args = queue.args
        limited = args.max_length is not None or args.max_length_bytes is not None
        return NewMessage(
            queue.queue_id, queue.row_priority(message), queue.row_ttl(message),
            message.exchange, message.routing_key, message.properties, message.body, limited,
            args.overflow.value, body_key, body_size,
        )  # fmt: skip

    async def publish(self, message: Message) -> PublishResult:
        """:meth:`publish_nowait`, then its commit; a publish a full ``reject-publish`` queue
        refused returns with ``rejected`` True."""
        result = self.publish_nowait(message)
        try:
            await result.wait_durable()
        except PreconditionError:
            if not result.rejected:
                raise
        return result

    # ---------------------------------------------------------------------- dead-lettering

    def dead_letter_rows(self, queue: ClusterQueue, dead: DeadMessage) -> list[NewMessage]:
        """The rows of the copy of ``dead``, dead-lettered by ``queue``: x-death headers as in
        single-node mode, routed from the queue's dead-letter exchange on this node's cache,
        with no row for a target it would cycle through."""
        dlx = queue.args.dead_letter_exchange
        exchange = None if dlx is None else self.exchanges.get(dlx)
        if dlx is None or exchange is None:
            return []
        message = Message(dead.exchange, dead.routing_key, dead.properties, dead.body)
        routing_key = queue.args.dead_letter_routing_key
        copy = add_death(message, queue.name, DeathReason(dead.reason), self.clock.now_ms())
        copy = copy.with_route(dlx, message.routing_key if routing_key is None else routing_key)
        targets: set[str] = set()
        self.router.route(exchange, copy, targets, None)
        return [
            self._row(self.queues[name], copy, dead.body_key, dead.body_size)
            for name in sorted(targets)
            if not is_cycle(copy, name)
        ]

    # ------------------------------------------------------------------------------ timers

    async def close(self) -> dict[str, QueueSummary]:
        """Give back what this node claimed (the settler commits it before the node closes);
        no queue has logs on this node to summarise."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks))
        for queue in self.queues.values():
            if isinstance(queue, ClusterQueue):
                queue.release_all()
        return {}
