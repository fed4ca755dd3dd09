"""Dead-letter routing for the cluster's SQL paths, on the node's cached definitions.

How it works: the transactions that delete a row for good (:mod:`wharf.cluster.queues.messages`)
insert its dead-lettered copies in the same transaction; they ask the node, through the
:class:`~wharf.cluster.queues.dead_letters.DeadLetterRouting` protocol, where the copies go.
:class:`ClusterDeadLetterRouting` answers from the node's cache: the queue (by id) gives its
``x-dead-letter-exchange`` and ``x-dead-letter-routing-key``; its virtual host adds the x-death
headers as single-node mode does (:func:`~wharf.core.queues.dead_letter.add_death`), routes the
copy with the router publishes use, drops the targets it would only cycle through
(:func:`~wharf.core.queues.dead_letter.is_cycle`), and makes one row per target queue. The
layering holds: the cluster layer calls down nothing of the core, the core passes this object
down.
"""

from __future__ import annotations

from collections.abc import Callable

from wharf.cluster.queues.dead_letters import DeadMessage
from wharf.cluster.queues.messages import NewMessage
from wharf.core.queues.cluster_queue import ClusterQueue
from wharf.core.queues.cluster_vhost import ClusterVirtualHost

__all__ = ["ClusterDeadLetterRouting"]


class ClusterDeadLetterRouting:
    """The node's dead-letter routing (see the module docstring); ``find`` gives a queue of
    the cache by id, with its virtual host."""

    def __init__(
        self, find: Callable[[int], tuple[ClusterVirtualHost, ClusterQueue] | None]
    ) -> None:
        self._find = find

    def dead_letters(self, queue_id: int) -> bool | None:
        found = self._find(queue_id)
        return None if found is None else found[1].args.dead_letter_exchange is not None

    def route(self, dead: DeadMessage) -> list[NewMessage]:
        found = self._find(dead.queue_id)
        if found is None:
            return []
        vhost, queue = found
        return vhost.dead_letter_rows(queue, dead)
