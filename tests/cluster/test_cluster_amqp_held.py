"""Messages held by delayed exchanges, at the SQL level: written by the publish transaction,
released once due by one node at a time in the transaction that deletes them, gone with their
exchange, and nothing released on a stale lease."""

from __future__ import annotations

import asyncio

import pytest

from wharf.cluster.catalog import NodeLease
from wharf.cluster.database import Database, Transaction
from wharf.cluster.nodes import LeaseLostError
from wharf.cluster.queues import definitions as defs
from wharf.cluster.queues import messages as msgs
from wharf.cluster.queues.held import HeldMessage, NewHeld, release_due


def held(body: bytes, delay_ms: int, exchange: str = "later") -> NewHeld:
    return NewHeld("/", exchange, delay_ms, exchange, "key", b"", body)


async def make_exchange(db: Database, name: str = "later") -> None:
    await defs.declare_exchange(
        db, defs.ExchangeRow("/", name, "x-delayed-message", True, False, False, "")
    )


async def held_count(db: Database) -> int:
    async with db.transaction() as tx:
        return int(await tx.fetchval("SELECT count(*) FROM amqp_held"))


class Recorder:
    """A release that takes everything it is given (or nothing, with ``keep``)."""

    def __init__(self, *, keep: bool = False) -> None:
        self.seen: list[HeldMessage] = []
        self.keep = keep

    async def __call__(self, tx: Transaction, due: list[HeldMessage]) -> list[int]:
        self.seen.extend(due)
        return [] if self.keep else [h.seq for h in due]


async def test_due_messages_are_released_in_order_and_deleted(
    db: Database, node_lease: NodeLease
) -> None:
    await make_exchange(db)
    writer = msgs.MessageWriter(db)
    await writer.publish([], [held(b"later", 60_000)])
    await writer.publish([], [held(b"a", 0)])
    await writer.publish([], [held(b"b", 0)])
    kept = Recorder(keep=True)
    assert await release_due(db, node_lease, kept) == 0
    assert [h.body for h in kept.seen] == [b"a", b"b"]
    assert await held_count(db) == 3  # what the release did not take stays held
    taken = Recorder()
    assert await release_due(db, node_lease, taken) == 2
    assert [(h.exchange, h.message_exchange, h.routing_key, h.body) for h in taken.seen] == [
        ("later", "later", "key", b"a"), ("later", "later", "key", b"b"),
    ]  # fmt: skip
    assert await held_count(db) == 1  # the one due in a minute


async def test_holds_of_a_deleted_exchange_go_with_it(
    db: Database, node_lease: NodeLease
) -> None:
    await make_exchange(db, "later")
    await make_exchange(db, "other")
    writer = msgs.MessageWriter(db)
    await writer.publish([], [held(b"a", 60_000, "later"), held(b"b", 60_000, "other")])
    await defs.delete_exchange(db, "/", "later")
    assert await held_count(db) == 1
    await writer.publish([], [held(b"c", 60_000, "later")])  # its exchange is gone
    assert await held_count(db) == 1


async def test_one_node_releases_at_a_time_and_each_message_once(
    db: Database, node_lease: NodeLease
) -> None:
    await make_exchange(db)
    await msgs.MessageWriter(db).publish([], [held(b"%d" % i, 0) for i in range(20)])
    recorders = [Recorder() for _ in range(4)]
    results = await asyncio.gather(*(release_due(db, node_lease, r) for r in recorders))
    assert sum(r or 0 for r in results) == 20
    released = [h.body for r in recorders for h in r.seen]
    assert sorted(released) == sorted(b"%d" % i for i in range(20))
    assert await held_count(db) == 0


async def test_a_stale_lease_releases_nothing(db: Database, node_lease: NodeLease) -> None:
    await make_exchange(db)
    await msgs.MessageWriter(db).publish([], [held(b"a", 0)])
    async with db.transaction() as tx:
        await tx.execute(
            "UPDATE nodes SET lease_expires_at = clock_timestamp() - interval '1 second'"
        )
    recorder = Recorder()
    with pytest.raises(LeaseLostError):
        await release_due(db, node_lease, recorder)
    assert recorder.seen == [] and await held_count(db) == 1
