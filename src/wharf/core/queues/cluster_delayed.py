"""Delayed exchanges (x-delayed-message) in cluster mode: held messages are database rows.

How it works: the single-node router holds a message at a delayed exchange in that exchange's
own store (:mod:`wharf.core.queues.delayed`). In a cluster, :class:`ClusterRouter` routes the
same way but, at a delayed exchange with an ``x-delay`` above 0, only *notes* the hold (the
exchange and the delay) and stops there, as the single-node router does; the virtual host turns
each note into an ``amqp_held`` row committed by the publish transaction
(:mod:`wharf.cluster.queues.held`), so the confirm still comes after the commit.

When a hold is due, one node at a time (:func:`wharf.cluster.queues.held.release_due`) calls
:func:`release_held` inside its transaction: each message, without its ``x-delay`` header, is
routed from its delayed exchange by ``x-delayed-type`` on this node's cached bindings, as the
single-node timer does, and its queue rows are inserted by that same transaction, which
deletes the held rows. A hold whose vhost or exchange this node does not know yet (its cache
lags a declaration made elsewhere) stays held for a later round; a deleted exchange took its
held rows with it. A released message that reaches no queue is dropped, as on one node.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from wharf.cluster.database import Transaction
from wharf.cluster.queues import messages as msgs
from wharf.cluster.queues.held import HeldMessage
from wharf.core.queues.delayed import delay_of
from wharf.core.queues.exchanges import DelayedExchange, Exchange
from wharf.core.queues.message import Message
from wharf.core.queues.router import PublishResult, Router

if TYPE_CHECKING:
    from wharf.core.queues.cluster_vhost import ClusterVirtualHost

__all__ = ["ClusterRouter", "release_held"]


class ClusterRouter(Router):
    """The single-node router, whose delayed exchanges note holds instead of keeping them."""

    _holding: list[tuple[str, int]] | None = None

    def route_holding(
        self, exchange: Exchange, message: Message, queues: set[str]
    ) -> list[tuple[str, int]]:
        """Add to ``queues`` the queues ``exchange`` routes ``message`` to now; returns the
        holds (delayed exchange, delay in ms) met on the way."""
        holding: list[tuple[str, int]] = []
        self._holding = holding
        try:
            self.route(exchange, message, queues, None)
        finally:
            self._holding = None
        return holding

    def _route(
        self,
        exchange: Exchange,
        message: Message,
        queues: set[str],
        visited: set[str],
        result: PublishResult | None,
        released: bool = False,
    ) -> bool:
        holding = self._holding
        if (
            holding is not None
            and not released
            and isinstance(exchange, DelayedExchange)
            and exchange.name not in visited
        ):
            delay = delay_of(message)
            if delay > 0:
                visited.add(exchange.name)
                exchange.messages_in += 1
                holding.append((exchange.name, delay))
                return True
        return super()._route(exchange, message, queues, visited, result, released)


async def release_held(
    tx: Transaction,
    due: list[HeldMessage],
    vhost_of: Callable[[str], ClusterVirtualHost | None],
) -> list[int]:
    """Route ``due`` (see the module docstring) and insert their queue rows in ``tx``;
    returns the seqs of the held rows released."""
    released: list[int] = []
    rows: list[msgs.NewMessage] = []
    for held in due:
        vhost = vhost_of(held.vhost)
        exchange = None if vhost is None else vhost.exchanges.get(held.exchange)
        if vhost is None or exchange is None:
            continue
        message = Message(
            held.message_exchange, held.routing_key, held.properties, held.body
        ).with_headers({}, remove=["x-delay"])
        names: set[str] = set()
        vhost.router.route(exchange, message, names, None, released=True)
        rows += vhost.rows_for(names, message, held.body_key, held.body_size)
        released.append(held.seq)
    if rows:
        await msgs.insert_messages(tx, rows)
    return released
