"""Direct replies between nodes: a reply published on one node to an address that a channel
on another node consumes (``amq.rabbitmq.reply-to``).

How it works: in cluster mode a reply address names its node's broker id
(:func:`wharf.core.queues.direct_reply.reply_broker`). A node that gets a publish to an address
of another node :func:`forward`\\ s it: one transaction inserts an ``amqp_replies`` row for
that broker id and sends ``pg_notify('wharf_amqp_replies', <broker id>)``; the publish is
routed, and confirmed, once that committed. The addressed node :func:`take`\\ s its rows
(``DELETE ... RETURNING``) when notified, and once a second anyway, and hands each reply to
its address's consumer, or drops it when the consumer is gone, as replies to a gone consumer
are dropped on one node. Rows nobody takes (their node died) are deleted after a minute by
:func:`expire`. Replies are not fenced: they carry no authority, and a node only ever takes
the rows of its own broker id.
"""

from __future__ import annotations

from dataclasses import dataclass

from wharf.cluster.database import Database

__all__ = ["CHANNEL", "Reply", "expire", "forward", "take"]

CHANNEL = "wharf_amqp_replies"
"""A node's broker id, when replies for it were forwarded."""


@dataclass(frozen=True, slots=True)
class Reply:
    vhost: str
    routing_key: str
    properties: bytes
    body: bytes


async def forward(db: Database, broker_id: int, reply: Reply) -> None:
    """Queue ``reply`` for the node ``broker_id`` and tell it; returns once committed."""
    async with db.transaction("amqp.replies.forward") as tx:
        await tx.execute(
            "INSERT INTO amqp_replies (broker_id, vhost, routing_key, properties, body)"
            " VALUES (%s, %s, %s, %b, %b)",
            (broker_id, reply.vhost, reply.routing_key, reply.properties, reply.body),
        )
        await tx.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(broker_id)))


async def take(db: Database, broker_id: int) -> list[Reply]:
    """The replies forwarded to ``broker_id``, in the order they were forwarded; they are
    gone from the table once this returns."""
    async with db.transaction("amqp.replies.take") as tx:
        rows = await tx.fetchall(
            "DELETE FROM amqp_replies WHERE broker_id = %s"
            " RETURNING seq, vhost, routing_key, properties, body",
            (broker_id,),
        )
    rows.sort(key=lambda r: int(r[0]))
    return [Reply(str(r[1]), str(r[2]), bytes(r[3]), bytes(r[4])) for r in rows]


async def expire(db: Database, max_age_s: float) -> int:
    """Delete replies older than ``max_age_s`` (their node did not take them); how many."""
    async with db.transaction("amqp.replies.expire") as tx:
        return await tx.execute(
            "DELETE FROM amqp_replies"
            " WHERE created_at < clock_timestamp() - make_interval(secs => %s)",
            (max_age_s,),
        )
