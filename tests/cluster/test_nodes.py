"""Node identity and membership against a real PostgreSQL, with short real leases: leases are the
database's clock, so virtual time cannot stand in. Waits are bounded polls; no test asserts a
duration beyond "within the lease and a margin"."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from helpers.cluster_fixtures import FAST_DATABASE
from helpers.postgres_server import PostgresServer
from wharf.cluster.catalog import NodeLease, check_lease
from wharf.cluster.database import Database, DatabaseSettings
from wharf.cluster.migrations import migrate
from wharf.cluster.nodes import (
    NODE_ID_FILE,
    LeaseLostError,
    Membership,
    MembershipSettings,
    broker_id,
    cluster_id,
    live_nodes,
    load_node_id,
    registered_nodes,
)
from wharf.errors import StorageError

SHORT = MembershipSettings(heartbeat_interval=0.1, lease_duration=0.5)
# A lease, plus a generous margin for a loaded machine: the longest any wait below may take.
MARGIN_S = SHORT.lease_duration + 10.0


@pytest.fixture
async def catalogue(db: Database) -> AsyncIterator[Database]:
    await migrate(db)
    yield db


def member(db: Database, node_id: str, **listeners: int) -> Membership:
    return Membership(db, node_id, "127.0.0.1", listeners or {"kafka": 9092}, SHORT)


async def live_ids(db: Database) -> list[str]:
    return [n.id for n in await live_nodes(db)]


async def eventually(check: Callable[[], Awaitable[bool]], within: float = MARGIN_S) -> None:
    deadline = time.monotonic() + within
    while not await check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.05)


# -- identity -----------------------------------------------------------------------------------


def test_the_node_id_is_generated_once_and_kept(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = load_node_id(data_dir)
    assert (data_dir / NODE_ID_FILE).read_text() == f"{first}\n"
    assert load_node_id(data_dir) == first  # a restart on the same data dir
    assert load_node_id(tmp_path / "other") != first


def test_an_operator_chosen_node_id_is_used(tmp_path: Path) -> None:
    (tmp_path / NODE_ID_FILE).write_text("broker-a.eu-1\n")
    assert load_node_id(tmp_path) == "broker-a.eu-1"


@pytest.mark.parametrize("content", ["", "has spaces", "x" * 64, "-leading-dash"])
def test_a_node_id_file_without_a_valid_id_is_a_storage_error(
    tmp_path: Path, content: str
) -> None:
    (tmp_path / NODE_ID_FILE).write_text(content)
    with pytest.raises(StorageError, match=NODE_ID_FILE):
        load_node_id(tmp_path)


# -- membership ---------------------------------------------------------------------------------


async def test_registered_nodes_are_live_with_their_listeners(catalogue: Database) -> None:
    a = member(catalogue, "node-a", kafka=9092, amqp=5672)
    b = member(catalogue, "node-b", kafka=19092)
    epoch_a, epoch_b = await a.register(), await b.register()
    assert epoch_a != epoch_b
    nodes = await live_nodes(catalogue)
    assert [(n.id, n.epoch, n.host, n.listeners) for n in nodes] == [
        ("node-a", epoch_a, "127.0.0.1", {"kafka": 9092, "amqp": 5672}),
        ("node-b", epoch_b, "127.0.0.1", {"kafka": 19092}),
    ]
    for node in nodes:
        assert node.started_at <= node.last_heartbeat < node.lease_expires_at
    assert a.holds_lease()


async def test_heartbeats_keep_a_node_live_past_its_lease(catalogue: Database) -> None:
    node = member(catalogue, "node-a")
    await node.register()
    first = (await live_nodes(catalogue))[0]
    lost: list[LeaseLostError] = []
    node.start_heartbeats(lost.append)
    try:
        await asyncio.sleep(SHORT.lease_duration * 3)
        nodes = await live_nodes(catalogue)
        assert [n.id for n in nodes] == ["node-a"] and not lost
        assert nodes[0].epoch == first.epoch
        assert nodes[0].last_heartbeat > first.last_heartbeat
        assert nodes[0].lease_expires_at > first.lease_expires_at
    finally:
        await node.deregister()


async def test_a_node_whose_heartbeats_stop_drops_out(catalogue: Database) -> None:
    silent, beating = member(catalogue, "silent"), member(catalogue, "beating")
    await silent.register()
    await beating.register()
    beating.start_heartbeats(lambda exc: None)
    try:

        async def silent_gone() -> bool:
            return await live_ids(catalogue) == ["beating"]

        await eventually(silent_gone)
        assert not silent.holds_lease()
        with pytest.raises(LeaseLostError, match="expired or was replaced"):
            await silent.heartbeat()  # an expired lease is over, even if no one else took it
        assert silent.epoch is None
    finally:
        await beating.deregister()


async def test_the_heartbeat_loop_reports_a_lost_lease(catalogue: Database) -> None:
    node = member(catalogue, "node-a")
    await node.register()
    async with catalogue.transaction() as tx:  # as if the node had been paused past its lease
        await tx.execute("UPDATE nodes SET lease_expires_at = clock_timestamp()")
    lost: list[LeaseLostError] = []
    async with asyncio.timeout(MARGIN_S):
        await node.run_heartbeats(lost.append)
    assert len(lost) == 1 and "node-a" in str(lost[0])
    assert not node.holds_lease()


async def test_a_restarted_node_keeps_its_id_and_gets_a_new_epoch(
    catalogue: Database, tmp_path: Path
) -> None:
    before = member(catalogue, load_node_id(tmp_path))
    old_epoch = await before.register()
    after = member(catalogue, load_node_id(tmp_path))  # the restart: same data dir
    new_epoch = await after.register()
    assert after.node_id == before.node_id and new_epoch > old_epoch
    assert [(n.id, n.epoch) for n in await live_nodes(catalogue)] == [(after.node_id, new_epoch)]
    with pytest.raises(LeaseLostError):
        await before.heartbeat()  # the old incarnation is fenced off
    await before.deregister()  # and cannot remove the new one's row
    assert await live_ids(catalogue) == [after.node_id]
    await after.heartbeat()


async def test_deregistering_removes_the_node_at_once(catalogue: Database) -> None:
    node = member(catalogue, "node-a")
    await node.register()
    node.start_heartbeats(lambda exc: None)
    await node.deregister()
    assert await live_ids(catalogue) == []
    assert node.epoch is None and not node.holds_lease()


async def test_the_documented_fencing_check_refuses_a_stale_epoch(catalogue: Database) -> None:
    """The check every write on a lease's authority makes (nodes.py's docstring)."""
    node = member(catalogue, "node-a")
    old = await node.register()
    new = await node.register()

    async def check(epoch: int) -> bool:
        async with catalogue.transaction() as tx:
            row = await tx.fetchone(
                "SELECT 1 FROM nodes WHERE id = %s AND epoch = %s"
                "   AND lease_expires_at > clock_timestamp() FOR KEY SHARE",
                ("node-a", epoch),
            )
        return row is not None

    assert await check(new) and not await check(old)

    async def expired() -> bool:
        return not await check(new)

    await eventually(expired)  # no heartbeats: the lease runs out and the check with it


async def test_a_heartbeat_does_not_wait_for_the_nodes_fenced_transactions(
    catalogue: Database,
) -> None:
    """Regression: the fence's share lock made every heartbeat wait for the node's open
    transactions, and every new fenced transaction queue behind that heartbeat (a convoy
    that held produce commits up). A heartbeat only extends the lease: it must go past."""
    node = member(catalogue, "node-a")
    epoch = await node.register()
    async with catalogue.transaction() as tx:
        await check_lease(tx, NodeLease("node-a", epoch), catalogue.name)
        await asyncio.wait_for(node.heartbeat(), MARGIN_S)  # while the fence is held


async def test_registering_again_waits_for_the_old_epochs_fenced_transactions(
    catalogue: Database,
) -> None:
    """A new epoch replaces the old one only once the old one's fenced transactions are over,
    so none of them commits after the replacement."""
    node = member(catalogue, "node-a")
    old = await node.register()
    async with catalogue.transaction() as tx:
        await check_lease(tx, NodeLease("node-a", old), catalogue.name)
        again = asyncio.create_task(member(catalogue, "node-a").register())
        await asyncio.sleep(0.5)
        assert not again.done()  # waits for this transaction
    new = await asyncio.wait_for(again, MARGIN_S)
    assert new > old


async def test_heartbeats_that_cannot_reach_the_database_give_the_lease_up(
    database_url: str, postgres: PostgresServer, database_settings: DatabaseSettings
) -> None:
    async with await Database.connect(database_url, settings=database_settings) as db:
        await migrate(db)
        node = member(db, "node-a")
        await node.register()
        lost: list[LeaseLostError] = []
        node.start_heartbeats(lost.append)
        postgres.stop()
        try:

            async def reported() -> bool:
                return bool(lost)

            await eventually(reported)
        finally:
            postgres.start()
        assert "no heartbeat" in str(lost[0]) and not node.holds_lease()
        await node.stop_heartbeats()


def test_a_lease_must_outlast_the_heartbeat_interval() -> None:
    with pytest.raises(ValueError, match="longer than the heartbeat interval"):
        MembershipSettings(heartbeat_interval=1.0, lease_duration=1.0)


# -- Kafka broker ids and the registered nodes ---------------------------------------------------


async def test_a_node_keeps_its_broker_id_and_each_node_gets_its_own(catalogue: Database) -> None:
    a = await broker_id(catalogue, "node-a")
    b = await broker_id(catalogue, "node-b")
    assert a != b
    assert await broker_id(catalogue, "node-a") == a  # a restart
    assert await broker_id(catalogue, "node-b") == b


async def test_nodes_starting_together_under_one_id_get_one_broker_id(
    database_url: str, database_settings: DatabaseSettings, catalogue: Database
) -> None:
    databases = [
        await Database.connect(database_url, settings=database_settings) for _ in range(4)
    ]
    try:
        ids = await asyncio.gather(*(broker_id(d, "twin") for d in databases))
    finally:
        for database in databases:
            await database.close()
    assert len(set(ids)) == 1


async def test_the_cluster_id_is_one_for_every_node(
    database_url: str, database_settings: DatabaseSettings, catalogue: Database
) -> None:
    other = await Database.connect(database_url, settings=database_settings)
    try:
        assert await cluster_id(catalogue) == await cluster_id(other)
    finally:
        await other.close()


async def test_registered_nodes_carry_broker_ids_and_liveness(catalogue: Database) -> None:
    a, b = member(catalogue, "a", kafka=1, http=2), member(catalogue, "b")
    await a.register()
    await b.register()
    a_id = await broker_id(catalogue, "a")
    await eventually(lambda: _live_set(catalogue, {"a": False, "b": False}))
    await a.register()  # a new lease; b's stays expired
    rows = {r.info.id: r for r in await registered_nodes(catalogue)}
    assert rows["a"].live and not rows["b"].live
    assert rows["a"].broker_id == a_id and rows["b"].broker_id is None
    assert rows["a"].info.listeners == {"kafka": 1, "http": 2}
    assert rows["a"].info.epoch == a.epoch


async def _live_set(db: Database, expected: dict[str, bool]) -> bool:
    return {r.info.id: r.live for r in await registered_nodes(db)} == expected


async def test_a_node_whose_database_sessions_are_gone_is_not_routable(
    catalogue: Database, database_url: str
) -> None:
    # kill -9 closes a node's connections at once, long before its lease runs out: Kafka
    # clients must be told to go elsewhere then (routing), while fencing still waits for the
    # lease. The node's sessions are named "wharf <node id>" (Database.connect).
    other = await Database.connect(database_url, node_id="node-gone", settings=FAST_DATABASE)
    long_lease = MembershipSettings(heartbeat_interval=1.0, lease_duration=60.0)
    await Membership(other, "node-gone", "127.0.0.1", {"kafka": 9092}, long_lease).register()
    rows = {r.info.id: r for r in await registered_nodes(catalogue)}
    assert rows["node-gone"].routable
    await other.close()

    async def gone() -> bool:
        rows = {r.info.id: r for r in await registered_nodes(catalogue)}
        return rows["node-gone"].live and not rows["node-gone"].routable

    await eventually(gone)


async def test_a_node_whose_heartbeats_are_late_is_not_routable(catalogue: Database) -> None:
    long_lease = MembershipSettings(heartbeat_interval=1.0, lease_duration=60.0)
    # the node is the test's own connections' ("wharf test-node"): connected, never heartbeating
    await Membership(catalogue, "test-node", "127.0.0.1", {"kafka": 9092}, long_lease).register()
    fresh = {r.info.id: r for r in await registered_nodes(catalogue, heartbeat_grace=30.0)}
    assert fresh["test-node"].routable
    await asyncio.sleep(0.3)
    late = {r.info.id: r for r in await registered_nodes(catalogue, heartbeat_grace=0.2)}
    assert late["test-node"].live and not late["test-node"].routable
