"""Publisher confirms of one channel (confirm.select), without I/O.

How it works: every publish on a channel in confirm mode gets the next sequence number (1, 2,
...) and joins the channel's open *batch*, an
:class:`~wharf.protocol.amqp.actions.AwaitDurable` holding the core's
:class:`~wharf.core.queues.vhost.PublishResult` of each publish (None for one a queue refused:
``x-overflow: reject-publish``, or a disk too full to take it). When the connection has worked
through the bytes it was given it closes the batch (:meth:`PublisherConfirms.take_batch`) and
hands it to the adapter, which waits for each result to be stored (a persistent message routed
to a durable queue once its record is fsynced by group commit, anything else at once) and
reports back which could not be (:meth:`PublisherConfirms.settle`).

Batches may come back in any order; they are released in publish order only. Released
sequence numbers wait in this object until the connection collects its output
(:meth:`PublisherConfirms.flush`): a run of acks then leaves as one Basic.Ack with
``multiple=true`` (everything before it is settled too), a nack as one Basic.Nack.

With an observer, each publish is timed from its numbering (its content complete) to its
Basic.Ack or Basic.Nack being handed out, under the operation name ``Basic.Publish``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from time import perf_counter
from typing import TYPE_CHECKING

from pamqp import base, commands

from wharf.protocol.amqp.actions import AwaitDurable
from wharf.protocol.amqp.timing import RequestObserver

if TYPE_CHECKING:
    from wharf.core.queues.router import PublishResult

__all__ = ["PublisherConfirms"]


class PublisherConfirms:
    """Sequence numbers, batches awaiting durability and coalesced Basic.Ack/Nack."""

    def __init__(
        self,
        channel: int,
        *,
        batch_opened: Callable[[PublisherConfirms], None],
        ready: Callable[[PublisherConfirms], None],
        observer: RequestObserver | None = None,
    ) -> None:
        self.channel = channel
        self._batch_opened = batch_opened  # the connection closes the batch after this input
        self._ready = ready  # the connection collects flush() with its next output
        self._observer = observer
        self._seq = 0
        self._batch: AwaitDurable | None = None
        self._outstanding: deque[AwaitDurable] = deque()  # handed out, in publish order
        self._ack_upto = 0  # released acks not yet flushed (0: none)
        self._frames: list[base.Frame] = []  # released frames that go before _ack_upto
        self._started: list[float] = []  # of released publishes, when timed
        self._closed = False

    def published(self, result: PublishResult) -> None:
        """Number the next publish; its confirm waits for ``result``."""
        self._seq += 1
        batch = self._batch
        if batch is None:
            batch = self._batch = AwaitDurable(self.channel, self._seq, [], self)
            self._batch_opened(self)
        batch.results.append(None if result.rejected else result)
        if self._observer is not None:
            batch.started.append(perf_counter())

    def take_batch(self) -> AwaitDurable | None:
        """Close the open batch; the adapter is to wait for it."""
        batch, self._batch = self._batch, None
        if batch is None or self._closed:
            return None
        self._outstanding.append(batch)
        return batch

    def settle(self, batch: AwaitDurable, failed: Sequence[int]) -> None:
        """``batch`` is stored, except the results at the indexes ``failed``."""
        if self._closed:
            return
        batch.failed = tuple(failed)
        outstanding = self._outstanding
        released = False
        while outstanding and outstanding[0].failed is not None:
            self._release(outstanding.popleft())
            released = True
        if released:
            self._ready(self)

    def _release(self, batch: AwaitDurable) -> None:
        results, failed = batch.results, batch.failed
        if not failed and None not in results:
            self._ack_upto = batch.first_seq + len(results) - 1
        else:
            seq = batch.first_seq
            for index, result in enumerate(results):
                if result is not None and (not failed or index not in failed):
                    self._ack_upto = seq
                else:
                    if self._ack_upto:
                        self._frames.append(
                            commands.Basic.Ack(delivery_tag=self._ack_upto, multiple=True)
                        )
                        self._ack_upto = 0
                    self._frames.append(
                        commands.Basic.Nack(delivery_tag=seq, multiple=False, requeue=False)
                    )
                seq += 1
        if batch.started:
            self._started += batch.started

    def flush(self) -> list[base.Frame]:
        """The Basic.Ack/Nack frames released since the last flush, in order."""
        frames, self._frames = self._frames, []
        if self._ack_upto:
            frames.append(commands.Basic.Ack(delivery_tag=self._ack_upto, multiple=True))
            self._ack_upto = 0
        observer = self._observer
        if observer is not None and self._started:
            now = perf_counter()
            for started in self._started:
                observer.observe("Basic.Publish", now - started)
            self._started = []
        return frames

    def close(self) -> None:
        """The channel is gone: confirm nothing more."""
        self._closed = True
        self._batch = None
        self._outstanding.clear()
        self._frames.clear()
        self._ack_upto = 0
        self._started = []
