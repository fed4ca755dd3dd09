"""x-death headers, as RabbitMQ writes them when it dead-letters a message.

``x-death`` is a list of tables, most recent first, one per (queue, reason) pair; dead-lettering
the same message again for the same pair increments ``count`` and moves the entry to the front.
Each entry holds ``queue``, ``reason`` (rejected, expired, maxlen, delivery_limit), ``count``,
``time``, ``exchange``, ``routing-keys`` and, when a per-message TTL was in play,
``original-expiration``. ``x-first-death-{queue,reason,exchange}`` are set once;
``x-last-death-{queue,reason,exchange}`` follow the latest.
"""

from __future__ import annotations

import datetime
from enum import StrEnum
from typing import Any

from wharf.core.queues.message import Message

__all__ = ["DeathReason", "add_death", "is_cycle"]


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
