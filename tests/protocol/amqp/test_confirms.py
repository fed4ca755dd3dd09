"""Publisher confirms: order, nacks for refused messages, and acks coalesced with multiple."""

from __future__ import annotations

import asyncio

from pamqp import base, commands

from wharf.core.vhosts import PublishResult
from wharf.protocol.amqp.confirms import PublisherConfirms


async def settle(sent: list[base.Frame], count: int) -> None:
    for _ in range(100):
        if len(sent) >= count:
            return
        await asyncio.sleep(0)


async def test_runs_of_acks_are_coalesced_around_a_nack() -> None:
    sent: list[base.Frame] = []
    confirms = PublisherConfirms(sent.append)
    for rejected in (False, False, True, False, False):
        confirms.published(PublishResult(routed=True, rejected=rejected))
    await settle(sent, 3)
    summary = [
        (type(m).__name__, m.delivery_tag, m.multiple)
        for m in sent
        if isinstance(m, commands.Basic.Ack | commands.Basic.Nack)
    ]
    assert summary == [("Ack", 2, True), ("Nack", 3, False), ("Ack", 5, True)]
    confirms.close()


async def test_nothing_is_sent_after_close() -> None:
    sent: list[base.Frame] = []
    confirms = PublisherConfirms(sent.append)
    confirms.published(PublishResult(routed=True))
    confirms.close()
    for _ in range(10):
        await asyncio.sleep(0)
    assert sent == []
