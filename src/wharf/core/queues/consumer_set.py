"""The consumers of one queue and the order in which they are offered messages.

How it works: consumers are kept in subscription order and, again, grouped by their priority
(AMQP's ``x-priority`` consume argument, 0 by default), highest first. :meth:`ConsumerSet.serve`
offers ready messages to the highest-priority group that has a consumer with credit
(``can_take()``), round robin within the group, so lower priorities receive only while every
higher-priority consumer is blocked (prefetch, flow). Each group remembers where its round robin
stands between calls.

Under single-active-consumer only the *active* consumer is offered anything. The first consumer
becomes active. When one with a higher priority subscribes (or, among the rest, when the active
one leaves) the highest-priority consumer, the earliest among equals, takes over: at once if the
active one left, else once the active one has no unacknowledged message left; until then nobody
gets new deliveries, so the queue's order is kept.
"""

from __future__ import annotations

from collections.abc import Callable

from wharf.core.queues.consumers import Consumer

__all__ = ["ConsumerSet"]


class _PriorityLevel:
    """The consumers of one priority, in subscription order, and where round robin stands."""

    __slots__ = ("consumers", "priority", "rr")

    def __init__(self, priority: int, consumers: list[Consumer]) -> None:
        self.priority = priority
        self.consumers = consumers
        self.rr = 0


class ConsumerSet:
    """The subscribers of one queue; see the module docstring."""

    __slots__ = ("_active", "_levels", "members_list", "single_active")

    def __init__(self, *, single_active: bool) -> None:
        self.single_active = single_active
        # In subscription order; read-only outside this class. Hot paths test it for emptiness
        # (a plain list) rather than the set (a Python-level __bool__ call).
        self.members_list: list[Consumer] = []
        self._levels: list[_PriorityLevel] = []  # the same consumers by priority, highest first
        self._active: Consumer | None = None

    def __len__(self) -> int:
        return len(self.members_list)

    def __bool__(self) -> bool:
        return bool(self.members_list)

    def __contains__(self, consumer: object) -> bool:
        return consumer in self.members_list

    @property
    def members(self) -> tuple[Consumer, ...]:
        return tuple(self.members_list)

    @property
    def active(self) -> Consumer | None:
        """Under single-active-consumer, the one that receives; None otherwise."""
        return self._active if self.single_active else None

    def refuses(self, consumer: Consumer) -> bool:
        """Whether exclusivity forbids adding ``consumer`` (an exclusive one is there, or it
        asks to be exclusive and others are)."""
        return any(c.exclusive for c in self.members_list) or (consumer.exclusive and bool(self))

    def add(self, consumer: Consumer, priority: int) -> None:
        self.members_list.append(consumer)
        levels = self._levels
        at = 0
        while at < len(levels) and levels[at].priority > priority:
            at += 1
        if at < len(levels) and levels[at].priority == priority:
            levels[at].consumers.append(consumer)
        else:
            levels.insert(at, _PriorityLevel(priority, [consumer]))
        if self._active is None:
            self._active = consumer

    def remove(self, consumer: Consumer) -> bool:
        """Drop ``consumer``; False when it was not subscribed."""
        if consumer not in self.members_list:
            return False
        self.members_list.remove(consumer)
        for level in self._levels:
            if consumer in level.consumers:
                level.consumers.remove(consumer)
                if not level.consumers:
                    self._levels.remove(level)
                break
        if consumer is self._active:
            self._active = self._levels[0].consumers[0] if self._levels else None
        return True

    def clear(self) -> list[Consumer]:
        """Drop every consumer; returns them in subscription order."""
        members = list(self.members_list)
        self.members_list.clear()
        self._levels = []
        self._active = None
        return members

    def serve(
        self,
        offer: Callable[[Consumer], bool],
        has_ready: Callable[[], bool],
        holds_unacked: Callable[[Consumer], bool],
    ) -> None:
        """Offer ready messages in priority and round-robin order while someone has credit.

        ``offer(consumer)`` hands the consumer one message and says whether more are ready
        (False also when none was left to hand); ``has_ready()`` says whether any is ready;
        ``holds_unacked(consumer)`` whether it still holds unacknowledged messages (the
        single-active-consumer hand-over waits for those)."""
        if not self.members_list:
            return
        if self.single_active:
            active = self._active
            preferred = self._levels[0].consumers[0]
            if active is not preferred:
                if active is not None and holds_unacked(active):
                    return  # the hand-over waits for the active consumer's acks
                self._active = active = preferred
            if has_ready():
                self._serve_level(_PriorityLevel(0, [preferred]), offer)
            return
        for level in list(self._levels):
            if not has_ready() or not self._serve_level(level, offer):
                return

    def _serve_level(self, level: _PriorityLevel, offer: Callable[[Consumer], bool]) -> bool:
        """Round robin over ``level`` while one has credit; False once nothing is ready."""
        candidates = list(level.consumers)
        members = self.members_list
        n = len(candidates)
        idle = 0
        while idle < n:
            consumer = candidates[level.rr % n]
            level.rr += 1
            if consumer not in members or not consumer.can_take():
                idle += 1
                continue
            idle = 0
            if not offer(consumer):
                return False
        return True
