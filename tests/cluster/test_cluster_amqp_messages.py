"""The AMQP message rows: group-committed publishes, claims fenced on the node's lease,
settlements that a stale epoch cannot commit, and the sweep of dead epochs."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from helpers.postgres_server import PostgresServer
from wharf.cluster.catalog import NodeLease
from wharf.cluster.database import Database
from wharf.cluster.nodes import LeaseLostError, Membership, MembershipSettings
from wharf.cluster.queues import definitions as defs
from wharf.cluster.queues import messages as msgs


def new(queue_id: int, body: bytes, priority: int = 0) -> msgs.NewMessage:
    return msgs.NewMessage(queue_id, priority, None, "", "q", b"", body)


async def make_queue(db: Database, name: str = "q") -> int:
    row, created = await defs.declare_queue(db, defs.QueueRow(0, "/", name, True, False, ""))
    assert created
    return row.id


async def second_node(db: Database, name: str = "node-b") -> Membership:
    membership = Membership(
        db, name, "127.0.0.1", {}, MembershipSettings(heartbeat_interval=1.0, lease_duration=60.0)
    )
    await membership.register()
    return membership


async def expire(db: Database, node_id: str) -> None:
    async with db.transaction() as tx:
        await tx.execute(
            "UPDATE nodes SET lease_expires_at = clock_timestamp() - interval '1 second'"
            " WHERE id = %s",
            (node_id,),
        )


async def test_concurrent_publishes_share_transactions_in_order(
    db: Database, node_lease: NodeLease
) -> None:
    queue = await make_queue(db)
    writer = msgs.MessageWriter(db)
    await asyncio.gather(*(writer.publish([new(queue, b"%d" % i)]) for i in range(50)))
    assert writer.transactions < 50
    claimed = await msgs.claim(db, node_lease, queue, 100)
    assert [m.body for m in claimed] == [b"%d" % i for i in range(50)]


async def test_publishes_to_a_deleted_queue_are_left_out(
    db: Database, node_lease: NodeLease
) -> None:
    kept, gone = await make_queue(db, "kept"), await make_queue(db, "gone")
    await defs.delete_queue(db, gone)
    writer = msgs.MessageWriter(db)
    await writer.publish([new(kept, b"a"), new(gone, b"b")])
    assert await msgs.ready_count(db, kept) == 1
    async with db.transaction() as tx:
        assert await tx.fetchval("SELECT count(*) FROM amqp_messages") == 1


async def test_two_nodes_claim_different_rows_by_priority(
    db: Database, node_lease: NodeLease
) -> None:
    queue = await make_queue(db)
    other = NodeLease.of(await second_node(db))
    await msgs.MessageWriter(db).publish(
        [new(queue, b"%d" % i, priority=i % 3) for i in range(9)]
    )
    a, b = await asyncio.gather(
        msgs.claim(db, node_lease, queue, 4), msgs.claim(db, other, queue, 4)
    )
    assert len(a) == len(b) == 4
    assert not {m.seq for m in a} & {m.seq for m in b}
    for claimed in (a, b):
        assert [m.priority for m in claimed] == sorted((m.priority for m in claimed), reverse=True)
    rest = await msgs.claim(db, node_lease, queue, 10)
    assert [m.priority for m in rest] == [0]  # the two 2s and 1s went first


async def test_a_stale_epoch_claims_nothing_and_settles_nothing(
    db: Database, node_lease: NodeLease
) -> None:
    queue = await make_queue(db)
    other = await second_node(db)
    stale = NodeLease.of(other)
    await msgs.MessageWriter(db).publish([new(queue, b"x"), new(queue, b"y")])
    [claimed] = await msgs.claim(db, stale, queue, 1)
    await other.register()  # a new epoch: the old one is over
    with pytest.raises(LeaseLostError):
        await msgs.claim(db, stale, queue, 1)
    settler = msgs.Settler(db, stale.node_id)
    settler.delete(stale.epoch, [claimed.seq])
    await settler.close()
    assert settler.fenced == 1
    async with db.transaction() as tx:
        assert await tx.fetchval("SELECT count(*) FROM amqp_messages") == 2


async def test_acks_delete_and_requeues_release_with_a_delivery_count(
    db: Database, node_lease: NodeLease
) -> None:
    queue = await make_queue(db)
    await msgs.MessageWriter(db).publish([new(queue, b"a"), new(queue, b"b"), new(queue, b"c")])
    a, b, c = await msgs.claim(db, node_lease, queue, 3)
    settler = msgs.Settler(db, node_lease.node_id)
    settler.delete(node_lease.epoch, [a.seq])
    settler.release(node_lease.epoch, [b.seq], delivered=True)
    settler.release(node_lease.epoch, [c.seq], delivered=False)
    await settler.close()
    back = await msgs.claim(db, node_lease, queue, 5)
    assert [(m.body, m.delivery_count) for m in back] == [(b"b", 1), (b"c", 0)]


def test_seq_runs_name_each_run_of_consecutive_values_once() -> None:
    assert msgs.seq_runs([]) == ([], [])
    assert msgs.seq_runs([7]) == ([7], [7])
    assert msgs.seq_runs([5, 1, 2, 3, 9, 2, 10]) == ([1, 5, 9], [3, 5, 10])


async def test_acks_delete_exactly_their_rows_between_unacked_ones(
    db: Database, node_lease: NodeLease
) -> None:
    queue = await make_queue(db)
    await msgs.MessageWriter(db).publish([new(queue, bytes([i])) for i in range(10)])
    claimed = await msgs.claim(db, node_lease, queue, 10)
    seqs = [m.seq for m in claimed]
    settler = msgs.Settler(db, node_lease.node_id)
    acked = [seqs[i] for i in (6, 0, 1, 2, 4, 5, 9, 1)]  # runs, out of order, a repeat
    settler.delete(node_lease.epoch, acked)
    await settler.close()
    async with db.transaction() as tx:
        left = await tx.fetchall("SELECT seq FROM amqp_messages ORDER BY seq")
    assert [r[0] for r in left] == [seqs[i] for i in (3, 7, 8)]


async def test_the_sweep_returns_a_dead_nodes_claims_and_deletes_its_exclusive_queues(
    db: Database, node_lease: NodeLease
) -> None:
    queue = await make_queue(db)
    dead = NodeLease.of(await second_node(db))
    own, _ = await defs.declare_queue(
        db, defs.QueueRow(0, "/", "mine", False, False, "", dead.node_id, dead.epoch, "c1")
    )
    await msgs.MessageWriter(db).publish([new(queue, b"x"), new(own.id, b"y")])
    [claimed] = await msgs.claim(db, dead, queue, 1)
    result = await msgs.sweep(db, node_lease)
    assert result == msgs.SweepResult(True, 0, 0, 0)  # the node is alive: nothing to do
    await expire(db, dead.node_id)
    result = await msgs.sweep(db, node_lease)
    assert (result.released, result.queues_deleted) == (1, 1)
    [again] = await msgs.claim(db, node_lease, queue, 5)
    assert (again.seq, again.delivery_count) == (claimed.seq, 1)
    loaded = await defs.load_definitions(db)
    assert [q.name for q in loaded.queues] == ["q"]
    async with db.transaction() as tx:
        assert await tx.fetchval("SELECT count(*) FROM amqp_messages") == 1


async def test_a_release_over_the_delivery_limit_deletes_the_row(
    db: Database, node_lease: NodeLease
) -> None:
    row, _ = await defs.declare_queue(
        db, defs.QueueRow(0, "/", "limited", True, False, "", delivery_limit=1)
    )
    await msgs.MessageWriter(db).publish([new(row.id, b"x")])
    settler = msgs.Settler(db, node_lease.node_id)
    for expected in (1, 1, 0):  # returned once: kept; twice: over the limit
        claimed = await msgs.claim(db, node_lease, row.id, 1)
        assert len(claimed) == expected
        settler.release(node_lease.epoch, [m.seq for m in claimed], delivered=True)
        await settler.close()


async def test_settlements_are_tried_again_until_the_database_is_back(
    db: Database, node_lease: NodeLease, postgres: PostgresServer
) -> None:
    queue = await make_queue(db)
    await msgs.MessageWriter(db).publish([new(queue, b"a"), new(queue, b"b")])
    a, b = await msgs.claim(db, node_lease, queue, 2)
    settler = msgs.Settler(db, node_lease.node_id, retry_interval=0.1)
    postgres.stop()
    try:
        settler.delete(node_lease.epoch, [a.seq])
        settler.release(node_lease.epoch, [b.seq], delivered=True)
        async with asyncio.timeout(30):
            while not settler.retries:
                await asyncio.sleep(0.05)
    finally:
        postgres.start()
    async with asyncio.timeout(30):
        while (await msgs.ready_count(db, queue)) != 1:
            await asyncio.sleep(0.1)
    await settler.close()
    [back] = await msgs.claim(db, node_lease, queue, 5)
    assert (back.body, back.delivery_count) == (b"b", 1)


async def test_drained_waits_for_what_was_queued_before_not_for_what_follows(
    db: Database, node_lease: NodeLease
) -> None:
    queue = await make_queue(db)
    await msgs.MessageWriter(db).publish([new(queue, b"a"), new(queue, b"b")])
    a, b = await msgs.claim(db, node_lease, queue, 2)
    settler = msgs.Settler(db, node_lease.node_id)
    await settler.drained()  # nothing queued: at once
    settler.release(node_lease.epoch, [a.seq], delivered=True)
    settler.delete(node_lease.epoch, [b.seq])
    waiting = asyncio.create_task(settler.drained())
    async with asyncio.timeout(30):
        while not waiting.done():
            settler.delete(node_lease.epoch, [10**12])  # settlements keep coming
            await asyncio.sleep(0.001)
    assert await msgs.ready_count(db, queue) == 1
    [back] = await msgs.claim(db, node_lease, queue, 5)
    assert (back.body, back.delivery_count) == (b"a", 1)
    await settler.close()


async def test_a_claim_is_found_again_by_its_token(db: Database, node_lease: NodeLease) -> None:
    queue = await make_queue(db)
    await msgs.MessageWriter(db).publish([new(queue, b"a"), new(queue, b"b"), new(queue, b"c")])
    claimed = await msgs.claim(db, node_lease, queue, 2, token=41)
    await msgs.claim(db, node_lease, queue, 1, token=42)
    found = await msgs.claimed_with(db, node_lease, queue, 41)
    assert found == claimed
    assert [m.body for m in found] == [b"a", b"b"]
    assert await msgs.claimed_with(db, node_lease, queue, 7) == []


def plan_nodes(plan: dict[str, object]) -> list[str]:
    """Every node type of an EXPLAIN (FORMAT JSON) plan, depth first."""
    children = plan.get("Plans", [])
    assert isinstance(children, list)
    return [str(plan["Node Type"]), *(n for c in children for n in plan_nodes(c))]


async def claim_plan(
    db: Database, node_lease: NodeLease, queue: int, count: int
) -> dict[str, Any]:
    """The plan PostgreSQL makes for a claim of ``count`` rows, under the claim's planner
    settings (EXPLAIN, FORMAT JSON)."""
    async with db.transaction() as tx:
        await tx.set_local(msgs.CLAIM_PLANNER_SETTINGS)
        explained = await tx.fetchval(
            "EXPLAIN (FORMAT JSON) " + msgs.CLAIM_STATEMENT,
            {"node": node_lease.node_id, "epoch": node_lease.epoch, "token": 1,
             "consumer": None, "queue": queue, "count": count},  # fmt: skip
        )
    plan: dict[str, Any] = explained[0]["Plan"]
    return plan


def subplans(plan: dict[str, Any], node_type: str) -> list[dict[str, Any]]:
    """The nodes of an EXPLAIN (FORMAT JSON) plan of one type, depth first."""
    own = [plan] if plan["Node Type"] == node_type else []
    return [*own, *(n for c in plan.get("Plans", []) for n in subplans(c, node_type))]


async def test_a_claim_walks_the_ready_index_from_its_head(
    db: Database, node_lease: NodeLease
) -> None:
    """A claim must not read every ready row of a long queue: under its planner settings it
    walks the ready index in delivery order and stops at its limit. (A benchmark caught
    PostgreSQL, with statistics taken mid-consume, planning a bitmap scan of all 50,000 ready
    rows and a sort: 78 ms per claim of 200 instead of 1.6 ms.)"""
    queue = await make_queue(db)
    fill = (
        "INSERT INTO amqp_messages (queue_id, priority, exchange, routing_key, properties, body)"
        " SELECT %s, 0, '', 'q', '', 'x' FROM generate_series(1, 50000)"
    )
    # as a queue is used: filled, consumed (claimed, then deleted), filled again; the table
    # is never analyzed in between, as autovacuum is slower than this
    async with db.transaction() as tx:
        await tx.execute(fill, (queue,))
        await tx.execute("UPDATE amqp_messages SET claimed_node = 'n', claimed_epoch = 1")
        await tx.execute("DELETE FROM amqp_messages")
    async with db.transaction() as tx:
        await tx.execute(fill, (queue,))
    plan = await claim_plan(db, node_lease, queue, 200)
    [pick] = subplans(plan, "Limit")  # the ready rows it takes
    assert plan_nodes(pick) == ["Limit", "LockRows", "Index Scan"]
    assert pick["Plans"][0]["Plans"][0]["Index Name"] == "amqp_messages_queue"


def scanned_whole(plan: dict[str, object]) -> list[str]:
    """The relations an EXPLAIN (FORMAT JSON) plan reads by a sequential scan."""
    children = plan.get("Plans", [])
    assert isinstance(children, list)
    own = [str(plan["Relation Name"])] if plan["Node Type"] == "Seq Scan" else []
    return [*own, *(r for c in children for r in scanned_whole(c))]


async def test_a_claim_reads_only_the_rows_it_claims(
    db: Database, node_lease: NodeLease
) -> None:
    """The claim's update finds its rows by their keys. (A benchmark caught PostgreSQL, with
    statistics of a long queue, joining the rows the claim picked against a sequential scan
    of the whole table: 19 ms per claim of 1,000 out of 68,000 rows instead of 4.7 ms, and
    growing with the queue.)"""
    queue = await make_queue(db)
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO amqp_messages (queue_id, priority, exchange, routing_key, properties,"
            " body) SELECT %s, 0, '', 'q', '', 'x' FROM generate_series(1, 50000)",
            (queue,),
        )
    async with db.transaction() as tx:
        await tx.execute("ANALYZE amqp_messages")
    plan = await claim_plan(db, node_lease, queue, 1000)
    assert "amqp_messages" not in scanned_whole(plan)


async def test_a_claim_updates_its_rows_in_place(db: Database, node_lease: NodeLease) -> None:
    """No index covers the claim's columns, so claiming a row is a HOT update: no new index
    entries, the new version in the same page (a claim of 1,000 rows took 4 ms this way
    against 15 ms with the claim columns indexed)."""
    queue = await make_queue(db)
    await msgs.MessageWriter(db).publish([new(queue, b"x" * 100) for _ in range(300)])
    async with db.transaction() as tx:
        claimed = await tx.fetchall(
            msgs.CLAIM_STATEMENT,
            {"node": node_lease.node_id, "epoch": node_lease.epoch, "token": 1,
             "consumer": None, "queue": queue, "count": 100},  # fmt: skip
        )
        assert len(claimed) == 100
        hot = await tx.fetchval(
            "SELECT pg_stat_get_xact_tuples_hot_updated('amqp_messages'::regclass)"
        )
    # a page filled to half holds the new versions of nearly all its rows: the last one or
    # two of a page may not fit beside them (line pointers take room too)
    assert hot >= 90, hot


async def test_an_ack_reads_only_the_rows_it_deletes(db: Database, node_lease: NodeLease) -> None:
    """The acks' delete finds its runs by the primary key, even in the generic plan of a
    prepared statement, which knows nothing of how long the runs are (here, a quarter of a
    long table claimed by the node, PostgreSQL plans a sequential scan of the whole table
    without the delete's planner settings)."""
    queue = await make_queue(db)
    async with db.transaction() as tx:
        await tx.execute(
            "INSERT INTO amqp_messages (queue_id, priority, exchange, routing_key, properties,"
            " body, claimed_node, claimed_epoch) SELECT %s, 0, '', 'q', '', 'x',"
            " CASE WHEN i %% 4 = 0 THEN %s::text END, %s FROM generate_series(1, 100000) i",
            (queue, node_lease.node_id, node_lease.epoch),
        )
    async with db.transaction() as tx:
        await tx.execute("ANALYZE amqp_messages")
    async with db.transaction() as tx:
        await tx.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await tx.set_local(msgs.DELETE_PLANNER_SETTINGS)
        prepare = (  # by the server: to the driver, $1... would be its own parameters
            "DO $do$ BEGIN EXECUTE $p$ PREPARE acks (text, bigint, bigint[], bigint[]) AS "
            + msgs.DELETE_STATEMENT.replace("%(node)s", "$1").replace("%(epoch)s", "$2")
            .replace("%(firsts)s", "$3").replace("%(lasts)s", "$4")
            + " $p$; END $do$"
        )
        await tx.execute(prepare)
        # a generic plan is the same whatever the values
        explained = await tx.fetchval("EXPLAIN (FORMAT JSON) EXECUTE acks('n', 1, '{10}', '{400}')")
        await tx.execute("DEALLOCATE acks")
    assert "amqp_messages" not in scanned_whole(explained[0]["Plan"])


async def test_the_sweep_finds_expired_rows_by_the_expiry_index(
    db: Database, node_lease: NodeLease
) -> None:
    """The sweep looks for expired ready rows through the index of rows with an expiry, not by
    reading the whole table (a benchmark caught the sweep, on every node every second,
    reading every row of a queue table where none could expire: up to 540 ms each, while it
    compared with the volatile clock_timestamp(), which no index can serve)."""
    queue = await make_queue(db)
    async with db.transaction() as tx:  # never analyzed, as autovacuum lags a busy queue
        await tx.execute(
            "INSERT INTO amqp_messages (queue_id, priority, exchange, routing_key, properties,"
            " body) SELECT %s, 0, '', 'q', '', 'x' FROM generate_series(1, 100000)",
            (queue,),
        )
    async with db.transaction() as tx:
        for statement in (
            "SELECT DISTINCT m.queue_id FROM amqp_messages m WHERE " + msgs.EXPIRED,
            "DELETE FROM amqp_messages m WHERE " + msgs.EXPIRED,
        ):
            explained = await tx.fetchval("EXPLAIN (FORMAT JSON) " + statement)
            assert "amqp_messages" not in scanned_whole(explained[0]["Plan"]), statement
