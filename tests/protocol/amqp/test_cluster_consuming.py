"""basic.consume on a queue of the cluster, through the sans-I/O connection of one of two
brokers on one database: the consumer is registered (an awaited step) before consume-ok, a
refusal by a consumer on the other node closes the channel with 403, and a connection lost
while the registration is in flight leaves no registration behind."""

from __future__ import annotations

import asyncio

from pamqp import commands

from wharf.core.broker import Broker
from wharf.protocol.amqp.actions import AwaitCore
from wharf.testing.amqp_pair import AMQPPair

BOUND_S = 20.0


async def opened(broker: Broker) -> AMQPPair:
    pair = AMQPPair(broker)
    await pair.open()
    await pair.expect(1, commands.Channel.Open(), commands.Channel.OpenOk)
    return pair


async def consumers(broker: Broker, queue: str) -> int:
    return (await broker.declare_queue(queue, passive=True)).consumer_count


async def test_consume_ok_comes_after_the_registration(two_brokers: tuple[Broker, Broker]) -> None:
    one, two = two_brokers
    await one.declare_queue("q")
    await two.declare_queue("q", passive=True)
    pair = await opened(one)
    actions = pair.send(1, commands.Basic.Consume(queue="q", consumer_tag="c"))
    assert [type(a) for a in actions] == [AwaitCore]
    assert pair.received() == []
    await pair.carry_out(actions)
    [(_, ok)] = pair.received()
    assert isinstance(ok, commands.Basic.ConsumeOk) and ok.consumer_tag == "c"
    assert await consumers(two, "q") == 1


async def test_a_consumer_refused_by_an_exclusive_one_elsewhere_closes_the_channel(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.declare_queue("q")
    await two.declare_queue("q", passive=True)
    async with two.consume("q", exclusive=True):
        pair = await opened(one)
        close = await pair.expect(
            1, commands.Basic.Consume(queue="q", consumer_tag="c"), commands.Channel.Close
        )
        assert (close.reply_code, close.class_id, close.method_id) == (403, 60, 20)
        assert "in exclusive use" in close.reply_text
        assert pair.conn.channels[1].consuming.consumers == {}


async def test_a_connection_lost_while_registering_leaves_no_registration(
    two_brokers: tuple[Broker, Broker],
) -> None:
    one, two = two_brokers
    await one.declare_queue("q")
    await two.declare_queue("q", passive=True)
    pair = await opened(one)
    [wait] = pair.send(1, commands.Basic.Consume(queue="q", consumer_tag="c"))
    assert isinstance(wait, AwaitCore)
    registering = asyncio.ensure_future(wait.awaitable)
    await asyncio.sleep(0)  # the registration has started
    registering.cancel()  # as the adapter does when the socket goes
    pair.conn.connection_lost()
    async with asyncio.timeout(BOUND_S):
        while await consumers(two, "q") or not await _registered_once(two):
            await asyncio.sleep(0.05)


async def _registered_once(broker: Broker) -> bool:
    """Whether a consumer row was ever written (the registration was not cut short)."""
    assert broker.cluster is not None
    async with broker.cluster.db.transaction() as tx:
        return bool(await tx.fetchval("SELECT is_called FROM amqp_consumers_id_seq"))
