"""Publisher confirms: order, nacks for refused messages, and acks coalesced with multiple."""

from __future__ import annotations

import asyncio

from pamqp import base, commands

from wharf.core.queues.vhost import PublishResult
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


class RecordingObserver:
    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []

    def observe(self, operation: str, seconds: float) -> None:
        self.seen.append((operation, seconds))


async def test_each_confirmed_or_nacked_publish_is_timed_once() -> None:
    sent: list[base.Frame] = []
    observer = RecordingObserver()
    confirms = PublisherConfirms(sent.append, observer)
    for rejected in (False, True, False):
        confirms.published(PublishResult(routed=True, rejected=rejected))
    assert observer.seen == []  # nothing is timed before its confirm is written
    await settle(sent, 3)
    assert len(sent) == 3
    assert [operation for operation, _ in observer.seen] == ["Basic.Publish"] * 3
    assert all(seconds >= 0 for _, seconds in observer.seen)
    confirms.close()
