"""Dead-lettering: the x-death headers, and moving a message to its dead-letter targets.

x-death headers are written as RabbitMQ writes them. ``x-death`` is a list of tables, most
recent first, one per (queue, reason) pair; dead-lettering the same message again for the same
pair increments ``count`` and moves the entry to the front. Each entry holds ``queue``,
``reason`` (rejected, expired, maxlen, delivery_limit), ``count``, ``time``, ``exchange``,
``routing-keys`` and, when a per-message TTL was in play, ``original-expiration``.
``x-first-death-{queue,reason,exchange}`` are set once; ``x-last-death-{queue,reason,exchange}``
follow the latest.

The move is at least once (:class:`DeadLetterer`): the copy, with its x-death entry, is routed
from the queue's dead-letter exchange and enqueued on every target (but not back into a queue
it would loop through with no consumer involved, :func:`is_cycle`); the source record is
settled only once every copy that must survive a crash is on disk
(:func:`settle_when_durable`), so a crash in between leaves the message in both queues, never
in neither. A delayed exchange releases its due messages the same way.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from wharf.core.clock import Clock
from wharf.core.queues.exchanges import Exchange
from wharf.core.queues.message import Message
from wharf.core.queues.router import PublishResult, Router
from wharf.errors import StorageError

if TYPE_CHECKING:
    from wharf.core.queues.queue import Queue

__all__ = ["DeadLetterer", "DeathReason", "add_death", "is_cycle", "settle_when_durable"]

log = logging.getLogger(__name__)


class DeathReason(StrEnum):
    REJECTED = "rejected"
    EXPIRED = "expired"
    MAXLEN = "maxlen"
    DELIVERY_LIMIT = "delivery_limit"


def add_death(message: Message, queue: str, reason: DeathReason, now_ms: int) -> Message:
    """The message as it leaves ``queue`` for its dead-letter exchange."""
    headers = message.headers
    deaths = headers.get("x-death")
    entries: list[dict[str, Any]] = (
        [dict(e) for e in deaths if isinstance(e, dict)] if isinstance(deaths, list) else []
    )
    when = datetime.datetime.fromtimestamp(now_ms // 1000, tz=datetime.UTC)
    original_expiration = message.expiration_text
    for i, entry in enumerate(entries):
        if entry.get("queue") == queue and entry.get("reason") == reason.value:
            entry["count"] = _count(entry.get("count")) + 1
            entry["time"] = when
            entries.insert(0, entries.pop(i))
            break
    else:
        entry = {
            "count": 1,
            "reason": reason.value,
            "queue": queue,
            "time": when,
            "exchange": message.exchange,
            "routing-keys": [message.routing_key],
        }
        if original_expiration is not None:
            entry["original-expiration"] = original_expiration
        entries.insert(0, entry)
    update: dict[str, Any] = {
        "x-death": entries,
        "x-last-death-queue": queue,
        "x-last-death-reason": reason.value,
        "x-last-death-exchange": message.exchange,
    }
    if "x-first-death-queue" not in headers:
        update["x-first-death-queue"] = queue
        update["x-first-death-reason"] = reason.value
        update["x-first-death-exchange"] = message.exchange
    dead = message.with_headers(update)
    if original_expiration is not None:
        dead = dead.without_expiration()
    return dead


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def is_cycle(message: Message, target_queue: str) -> bool:
    """Whether dead-lettering into ``target_queue`` would loop with no client involved.

    RabbitMQ drops such a message: it went through ``target_queue`` already and no death on the
    way was a rejection by a consumer.
    """
    deaths = message.headers.get("x-death")
    if not isinstance(deaths, list):
        return False
    seen = False
    for entry in deaths:
        if not isinstance(entry, dict):
            continue
        if entry.get("reason") == DeathReason.REJECTED.value:
            return False
        if entry.get("queue") == target_queue:
            seen = True
    return seen


class DeadLetterer:
    """Moves the messages the queues of one virtual host dead-letter (see the module
    docstring); ``spawn`` runs a coroutine in the virtual host's background."""

    def __init__(
        self,
        router: Router,
        exchanges: Mapping[str, Exchange],
        clock: Clock,
        spawn: Callable[[Awaitable[None]], None],
    ) -> None:
        self._router = router
        self._exchanges = exchanges
        self._clock = clock
        self._spawn = spawn

    def move(self, queue: Queue, message: Message, reason: DeathReason, offset: int | None) -> None:
        """Republish ``message``, dead-lettered by ``queue``, through the queue's dead-letter
        exchange; settle its record at ``offset`` in ``queue`` once the copies are durable
        (``offset`` None: it has no record to settle)."""
        dlx = queue.args.dead_letter_exchange
        exchange = None if dlx is None else self._exchanges.get(dlx)
        copies = PublishResult()
        if dlx is not None and exchange is not None:
            routing_key = queue.args.dead_letter_routing_key
            dead = add_death(message, queue.name, reason, self._clock.now_ms())
            dead = dead.with_route(dlx, message.routing_key if routing_key is None else routing_key)
            targets: set[str] = set()
            self._router.route(exchange, dead, targets, None)
            targets = {t for t in targets if not is_cycle(dead, t)}
            self._router.deliver_to(targets, dead, copies)
        if offset is not None:
            settle_when_durable(queue.settle, [offset], copies, self._spawn)


def settle_when_durable(
    settle: Callable[[list[int]], None],
    offsets: list[int],
    copies: PublishResult,
    spawn: Callable[[Awaitable[None]], None],
) -> None:
    """Call ``settle(offsets)`` once ``copies`` are durable: at once when none has to be, else
    from a task started with ``spawn``. If a copy cannot be written the source is not settled,
    so the message is back in its source after a restart. Without a running event loop (the
    core driven synchronously) there is nothing to wait with: it settles at once."""
    if not copies.must_wait or not _loop_running():
        settle(offsets)
        return

    async def settle_after_copies() -> None:
        try:
            await copies.wait_durable()
        except StorageError as exc:
            log.error("moved messages not settled in their source (copies not on disk): %s", exc)
            return
        settle(offsets)

    spawn(settle_after_copies())


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
