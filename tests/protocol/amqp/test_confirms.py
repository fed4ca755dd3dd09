"""Publisher confirms: batches in publish order, nacks for refused or unstored messages, acks
coalesced with multiple; then the whole path through a connection."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pamqp import base, commands

from wharf.core.broker import Broker
from wharf.core.queues.router import PublishResult
from wharf.protocol.amqp.actions import AwaitDurable
from wharf.protocol.amqp.confirms import PublisherConfirms
from wharf.protocol.amqp.timing import RequestObserver
from wharf.testing.amqp_pair import AMQPPair, content_frames


class Recorder:
    """Stands in for the connection: which confirms opened a batch or have frames ready."""

    def __init__(self) -> None:
        self.opened: list[PublisherConfirms] = []
        self.ready: list[PublisherConfirms] = []

    def confirms(self, observer: RequestObserver | None = None) -> PublisherConfirms:
        return PublisherConfirms(
            1, batch_opened=self.opened.append, ready=self.ready.append, observer=observer
        )


def summary(frames: list[base.Frame]) -> list[tuple[str, int, bool]]:
    out = []
    for m in frames:
        assert isinstance(m, commands.Basic.Ack | commands.Basic.Nack)
        out.append((type(m).__name__, m.delivery_tag, m.multiple))
    return out


def publish_batch(confirms: PublisherConfirms, *rejected: bool) -> AwaitDurable:
    for refused in rejected:
        confirms.published(PublishResult(routed=True, rejected=refused))
    batch = confirms.take_batch()
    assert batch is not None
    return batch


def test_runs_of_acks_are_coalesced_around_a_nack() -> None:
    recorder = Recorder()
    confirms = recorder.confirms()
    batch = publish_batch(confirms, False, False, True, False, False)
    assert recorder.opened == [confirms]
    assert (batch.first_seq, batch.channel) == (1, 1)
    assert [r is None for r in batch.results] == [False, False, True, False, False]
    assert recorder.ready == []
    confirms.settle(batch, ())
    assert recorder.ready == [confirms]
    assert summary(confirms.flush()) == [("Ack", 2, True), ("Nack", 3, False), ("Ack", 5, True)]
    assert confirms.flush() == []


def test_results_that_could_not_be_stored_are_nacked() -> None:
    confirms = Recorder().confirms()
    batch = publish_batch(confirms, False, False, False)
    confirms.settle(batch, [1])
    assert summary(confirms.flush()) == [("Ack", 1, True), ("Nack", 2, False), ("Ack", 3, True)]


def test_batches_are_released_in_publish_order_only() -> None:
    recorder = Recorder()
    confirms = recorder.confirms()
    first = publish_batch(confirms, False, False)
    second = publish_batch(confirms, False)
    assert second.first_seq == 3
    confirms.settle(second, ())
    assert recorder.ready == [] and confirms.flush() == []  # waits for the first batch
    confirms.settle(first, ())
    assert summary(confirms.flush()) == [("Ack", 3, True)]  # both, in one frame


def test_nothing_is_sent_after_close() -> None:
    confirms = Recorder().confirms()
    batch = publish_batch(confirms, False)
    confirms.close()
    confirms.settle(batch, ())
    assert confirms.flush() == []
    confirms.published(PublishResult(routed=True))
    assert confirms.take_batch() is None


class RecordingObserver:
    def __init__(self) -> None:
        self.seen: list[tuple[str, float]] = []

    def observe(self, operation: str, seconds: float) -> None:
        self.seen.append((operation, seconds))


def test_each_confirmed_or_nacked_publish_is_timed_once() -> None:
    observer = RecordingObserver()
    confirms = Recorder().confirms(observer)
    batch = publish_batch(confirms, False, True, False)
    confirms.settle(batch, ())
    assert observer.seen == []  # nothing is timed before its confirm is handed out
    assert len(confirms.flush()) == 3
    assert [operation for operation, _ in observer.seen] == ["Basic.Publish"] * 3
    assert all(seconds >= 0 for _, seconds in observer.seen)


@pytest.fixture
async def broker(tmp_path: Path) -> AsyncIterator[Broker]:
    async with Broker.open(tmp_path / "data") as broker:
        yield broker


async def test_a_connection_hands_out_one_batch_per_input_and_channel(broker: Broker) -> None:
    pair = AMQPPair(broker)
    await pair.open()
    for channel in (1, 2):
        await pair.expect(channel, commands.Channel.Open(), commands.Channel.OpenOk)
        await pair.expect(channel, commands.Confirm.Select(), commands.Confirm.SelectOk)
    await pair.call(1, commands.Queue.Declare(queue="q", durable=True))
    persistent = commands.Basic.Properties(delivery_mode=2)
    publish = commands.Basic.Publish(exchange="", routing_key="q")
    data = b"".join(
        content_frames(channel, publish, b"m", persistent) for channel in (1, 1, 2, 1)
    )
    actions = pair.feed(data)
    assert pair.received() == []  # no confirm before the adapter has waited
    assert [(a.channel, a.first_seq, len(a.results)) for a in actions] == [  # type: ignore[union-attr]
        (1, 1, 3),
        (2, 1, 1),
    ]
    await pair.carry_out(actions)
    confirms = {(channel, frame.delivery_tag, frame.multiple) for channel, frame in pair.received()}
    assert confirms == {(1, 3, True), (2, 1, True)}
