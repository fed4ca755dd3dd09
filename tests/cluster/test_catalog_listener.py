"""Catalogue notifications: every committed change is heard on ``wharf_catalog``, a refused one
is not, and a listener that reconnects re-reads (it may have missed some)."""

from __future__ import annotations

import asyncio

import pytest

from wharf.cluster.catalog import NodeLease, alter_configs, create_partitions, create_topic
from wharf.cluster.catalog_listener import CatalogListener
from wharf.cluster.database import Database
from wharf.errors import AlreadyExistsError

BOUND_S = 30.0


class Heard:
    def __init__(self) -> None:
        self.count = 0
        self.event = asyncio.Event()

    def __call__(self) -> None:
        self.count += 1
        self.event.set()

    async def next(self) -> None:
        await asyncio.wait_for(self.event.wait(), BOUND_S)
        self.event.clear()


async def test_committed_changes_are_heard_and_refused_ones_are_not(
    db: Database, node_lease: NodeLease
) -> None:
    heard = Heard()
    listener = CatalogListener(db, heard)
    listener.start()
    try:
        await asyncio.wait_for(listener.listening.wait(), BOUND_S)
        await heard.next()  # the first connection reads once: it may have missed changes
        await create_topic(db, node_lease, "orders", 1)
        await heard.next()
        await create_partitions(db, node_lease, "orders", 3)
        await heard.next()
        await alter_configs(db, node_lease, "orders", {"retention.ms": "5"})
        await heard.next()
        before = heard.count
        with pytest.raises(AlreadyExistsError):  # rolled back: nothing is announced
            await create_topic(db, node_lease, "orders", 1)
        await create_topic(db, node_lease, "audit", 1)  # ...and this one is, after it
        await heard.next()
        assert heard.count == before + 1
    finally:
        await listener.close()
    assert not listener.listening.is_set()


async def test_a_lost_connection_is_reopened_and_read_again(
    db: Database, node_lease: NodeLease
) -> None:
    heard = Heard()
    listener = CatalogListener(db, heard, retry_interval=0.05)
    listener.start()
    try:
        await asyncio.wait_for(listener.listening.wait(), BOUND_S)
        await heard.next()
        async with db.transaction() as tx:  # end every listening session of this database
            await tx.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query = 'LISTEN wharf_catalog' AND pid <> pg_backend_pid()"
            )
        await heard.next()  # read again once reconnected
        assert listener.listening.is_set()
        await create_topic(db, node_lease, "after", 1)
        await heard.next()
    finally:
        await listener.close()
