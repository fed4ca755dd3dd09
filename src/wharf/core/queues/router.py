"""Routing a publish: exchange -> bindings -> queues, in one synchronous step.

How it works: :meth:`Router.publish` resolves the exchange, walks its destinations (following
exchange-to-exchange bindings once each, trying the alternate exchange of any exchange that
matched nothing, holding messages with an x-delay at a delayed exchange), then enqueues the
message on every queue reached, in name order, before returning, so that publish order is kept.
The returned :class:`PublishResult` says whether the message was routed (a mandatory publish
that was not gets basic.return) and whether a full queue refused it, and
:meth:`PublishResult.wait_durable` waits for the fsyncs a publisher confirm needs (persistent
message, durable queue, ``--fsync always``).

A publish to the default exchange whose routing key is a direct reply-to address
(``amq.rabbitmq.reply-to.<token>``, :mod:`wharf.core.queues.direct_reply`) goes straight to the
consumer of that address, which ``replies`` keeps; no queue is involved.

The router reads the virtual host's tables (exchanges, queues, delayed exchanges' held
messages) in place; the virtual host (:mod:`wharf.core.queues.vhost`) changes them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wharf.core.clock import Clock
from wharf.core.queues.delayed import DelayedMessages, delay_of
from wharf.core.queues.direct_reply import DirectReplies
from wharf.core.queues.exchanges import DestKind, Exchange
from wharf.core.queues.message import Message
from wharf.errors import AccessRefusedError, NotFoundError, PreconditionError

if TYPE_CHECKING:
    from wharf.core.queues.queue import Queue

__all__ = ["PublishResult", "Router"]


class RefusedAtCommitError(PreconditionError):
    """A queue with x-overflow reject-publish refused the copy when it was committed (cluster
    mode decides there; single-node mode at enqueue)."""


@dataclass(slots=True)
class PublishResult:
    """Outcome of one publish.

    ``routed``: reached at least one queue (or was held by a delayed exchange); a mandatory
    publish with ``routed`` False gets basic.return (312 NO_ROUTE). ``rejected``: a queue with
    x-overflow reject-publish refused it: nack the publisher.
    """

    routed: bool = False
    rejected: bool = False
    queues: list[str] = field(default_factory=list)
    # (wait, offset): ``await wait(offset)`` returns once that copy is durable
    _waits: list[tuple[Callable[[int], Awaitable[None]], int]] = field(default_factory=list)

    @property
    def must_wait(self) -> bool:
        """Whether some copy is not durable yet (:meth:`wait_durable` would wait)."""
        return bool(self._waits)

    async def wait_durable(self) -> None:
        """Return once every copy that must survive a crash is fsynced. A wait may raise
        :class:`RefusedAtCommitError`: the result is then ``rejected``. (The waits never hold
        the result: a publish is freed by reference counting, not left to the collector.)"""
        for wait, offset in self._waits:
            try:
                await wait(offset)
            except RefusedAtCommitError:
                self.rejected = True
                raise


class Router:
    """Routes the publishes of one virtual host. Counters: ``published`` (publishes
    received), ``unroutable`` (published to no queue). ``replies``: the live direct reply-to
    addresses."""

    def __init__(
        self,
        vhost: str,
        exchanges: dict[str, Exchange],
        queues: dict[str, Queue],
        delayed: dict[str, DelayedMessages],
        clock: Clock,
        wakeup: Callable[[], None],
    ) -> None:
        self.vhost = vhost
        self._exchanges = exchanges
        self._queues = queues
        self._delayed = delayed
        self._clock = clock
        self._wakeup = wakeup  # the timer must look again: a delayed message is held
        self.replies = DirectReplies()
        self.published = 0
        self.unroutable = 0

    def publish(self, message: Message) -> PublishResult:
        """Route and enqueue ``message`` now. NotFoundError (404) for a missing exchange,
        AccessRefusedError (403) for an internal one."""
        exchange = self._exchanges.get(message.exchange)
        if exchange is None:
            raise NotFoundError(f"no exchange '{message.exchange}' in vhost '{self.vhost}'")
        if exchange.internal:
            raise AccessRefusedError(
                f"cannot publish to internal exchange '{message.exchange}' in vhost '{self.vhost}'"
            )
        self.published += 1
        result = PublishResult()
        if exchange.name == "":  # the default exchange: the queue the routing key names
            exchange.messages_in += 1
            name = message.routing_key
            if name in self._queues:
                exchange.messages_out += 1
                self.deliver_to((name,), message, result)
                result.routed = True
            elif self.replies.deliver(name, message):
                exchange.messages_out += 1
                result.routed = True
            else:
                self.unroutable += 1
            return result
        queues: set[str] = set()
        held = self.route(exchange, message, queues, result)
        self.deliver_to(queues, message, result)
        result.routed = bool(queues) or held
        if not result.routed:
            self.unroutable += 1
        return result

    def route(
        self,
        exchange: Exchange,
        message: Message,
        queues: set[str],
        result: PublishResult | None,
        *,
        released: bool = False,
    ) -> bool:
        """Add to ``queues`` the queues ``exchange`` routes ``message`` to; True if a delayed
        exchange held it instead (its wait is added to ``result``). ``released``: the message
        leaves a delayed exchange now and is not held again."""
        return self._route(exchange, message, queues, set(), result, released)

    def _route(
        self,
        exchange: Exchange,
        message: Message,
        queues: set[str],
        visited: set[str],
        result: PublishResult | None,
        released: bool = False,
    ) -> bool:
        if exchange.name in visited:
            return False
        visited.add(exchange.name)
        exchange.messages_in += 1
        if exchange.name == "":
            if message.routing_key in self._queues:
                queues.add(message.routing_key)
                exchange.messages_out += 1
            return False
        held = self._delayed.get(exchange.name)
        if held is not None and not released:
            delay = delay_of(message)
            if delay > 0:
                now = self._clock.now_ms()
                offset = held.hold(message, now + delay, now)
                if offset is not None and result is not None:
                    result._waits.append((held.store.wait_durable, offset))
                self._wakeup()
                return True
        destinations = exchange.route(message)
        exchange.messages_out += len(destinations)
        held_any = False
        before = len(queues)
        for kind, name in destinations:
            if kind is DestKind.QUEUE:
                if name in self._queues:
                    queues.add(name)
            else:
                target = self._exchanges.get(name)
                if target is not None:
                    held_any |= self._route(target, message, queues, visited, result)
        if len(queues) == before and not held_any:
            alternate = exchange.alternate_exchange
            if alternate is not None and alternate in self._exchanges:
                held_any |= self._route(
                    self._exchanges[alternate], message, queues, visited, result
                )
        return held_any

    def deliver_to(
        self, queues: Collection[str], message: Message, result: PublishResult | None
    ) -> None:
        """Enqueue ``message`` on ``queues`` (in name order), noting each outcome in
        ``result``."""
        for name in sorted(queues) if len(queues) > 1 else queues:
            queue = self._queues[name]
            outcome = queue.enqueue(message)
            if result is None:
                continue
            result.queues.append(name)
            if not outcome.accepted:
                result.rejected = True
            elif outcome.sync_offset is not None:
                result._waits.append((queue.wait_durable, outcome.sync_offset))
