"""Direct replies forwarded between nodes through the database: taken by the addressed node
only, in the order they were forwarded, and dropped after a while when nobody takes them."""

from __future__ import annotations

from wharf.cluster.database import Database
from wharf.cluster.migrations import migrate
from wharf.cluster.queues import replies


def reply(n: int) -> replies.Reply:
    return replies.Reply("/", f"amq.rabbitmq.reply-to.n1.t{n}", b"\x00\x00", b"answer %d" % n)


async def test_a_node_takes_the_replies_for_it_in_order(db: Database) -> None:
    await migrate(db)
    for n in range(3):
        await replies.forward(db, 1, reply(n))
    await replies.forward(db, 2, reply(9))
    assert await replies.take(db, 1) == [reply(n) for n in range(3)]
    assert await replies.take(db, 1) == []  # taken once
    assert await replies.expire(db, 3600) == 0
    assert await replies.expire(db, 0) == 1  # node 2's, never taken
    assert await replies.take(db, 2) == []
