"""What the SQL paths of the cluster's queues ask of the node when a message is dead-lettered.

How it works: a row leaves its queue for its dead-letter exchange (rejected without requeue,
expired, dropped from the head by a length limit, refused by ``reject-publish-dlx``, over its
delivery limit) in a transaction of :mod:`wharf.cluster.queues.messages`: the settle batch, the
sweep, a claim, a publish. The copies must be inserted in that same transaction, so a crash
loses or doubles nothing; but routing them needs the exchanges and bindings, which this layer
does not know. The node passes down a :class:`DeadLetterRouting` (the core's, routing on the
node's cached definitions with the router publishes use): the transaction asks it which queues
dead-letter, hands it each message that leaves, and inserts the rows it returns. A queue the node
does not know yet (declared elsewhere a moment ago) keeps its rows for a later transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from wharf.cluster.queues.messages import NewMessage

__all__ = ["DROP_HEAD", "REJECT_PUBLISH", "REJECT_PUBLISH_DLX", "DeadLetterRouting",
           "DeadMessage"]  # fmt: skip

DROP_HEAD = "drop-head"
REJECT_PUBLISH = "reject-publish"
REJECT_PUBLISH_DLX = "reject-publish-dlx"
"""The ``x-overflow`` values, as :class:`~wharf.cluster.queues.messages.NewMessage` carries them."""


@dataclass(frozen=True, slots=True)
class DeadMessage:
    """A message leaving queue ``queue_id`` for ``reason`` (rejected, expired, maxlen,
    delivery_limit), as it was in the queue."""

    queue_id: int
    exchange: str
    routing_key: str
    properties: bytes
    body: bytes
    reason: str
    body_key: str | None = None
    """The object holding the body (``body`` is then empty): the copies name it too, in the
    transaction that deletes this row (see :mod:`wharf.cluster.queues.bodies`)."""
    body_size: int | None = None


class DeadLetterRouting(Protocol):
    """The node's dead-letter routing (see the module docstring)."""

    def dead_letters(self, queue_id: int) -> bool | None:
        """Whether the queue has a dead-letter exchange; None when this node does not know
        the queue (its rows are left for later)."""
        ...

    def route(self, dead: DeadMessage) -> list[NewMessage]:
        """The rows the dead-lettered copy becomes: one per target queue (none when the
        dead-letter exchange is missing, routes nowhere, or only in a cycle)."""
        ...
