"""The embedded broker: one object that owns every core component of a data directory.

How it works: :meth:`Broker.open` is an async context manager. Entering it takes an exclusive
lock on the data directory (``<data>/wharf.pid``, naming the holder's pid: see
:mod:`wharf.core.data_dir_lock`), then opens the components in dependency order
(streams: topics and their partition logs, committed offsets, the group coordinator; queues:
the virtual hosts with their exchanges, queues and bindings; then the maintenance timer, a
:class:`~wharf.core.timer_chain.TimerChain` on the broker's clock running retention and offset
expiry every retention check interval), opening and recovering their logs on the broker's one
fsync pool (:func:`~wharf.core.durability.fsync_executor`), which every later disk wait uses
too, so no fsync runs on the event-loop thread. Leaving it stops them in reverse order: background
work first, then in-process queue subscriptions end (their unsettled messages return to their
queues), parked group members are woken, and every log is flushed and closed. Front ends
(Kafka, AMQP, HTTP) and embedding applications hold the same ``Broker`` object; the streams and
queues methods below are the embedding API (see docs/embedded.md).

In cluster mode (``cluster``: a :class:`~wharf.core.cluster_node.ClusterNode`) the streams'
topics and batches live in the cluster's engines (:mod:`wharf.core.streams.cluster_streams`,
imported only then); producer ids come from the catalogue; committed offsets are in the
database; queues, with their definitions and messages, are the cluster's too
(:mod:`wharf.core.queues.cluster_registry`); users stay in the data directory.

Data directory layout (streams)::

    <data>/wharf.pid                 locked while a broker has the directory open; its pid
    <data>/topics.json               topic catalogue, with topics.*.journal (core/streams/topics.py)
    <data>/topics/<topic>-<n>/       one storage log per partition, made by its first record
    <data>/topic-summaries.json      what each partition log held at a clean stop
    <data>/__consumer_offsets/       committed offsets (see core/streams/offsets.py)
    <data>/producer-id-block         idempotent producer id counter
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wharf.core.clock import Clock
from wharf.core.config import BrokerConfig
from wharf.core.data_dir_lock import DataDirLock
from wharf.core.durability import fsync_executor, run_off_loop
from wharf.core.queues.embedded import GetHolder, QueueSubscription, ReceivedMessage
from wharf.core.queues.exchanges import Exchange
from wharf.core.queues.message import Message
from wharf.core.queues.queue import Queue
from wharf.core.queues.registry import DEFAULT_VHOST, VhostRegistry
from wharf.core.queues.router import PublishResult
from wharf.core.queues.vhost import VirtualHost
from wharf.core.stats import BrokerStats
from wharf.core.streams.errors import ErrorCode, StreamsError
from wharf.core.streams.groups.cluster_store import ClusterOffsetStore
from wharf.core.streams.groups.coordinator import GroupCoordinator
from wharf.core.streams.groups.placement import GroupPlacement
from wharf.core.streams.groups.store import GroupStore
from wharf.core.streams.offsets import OffsetAndMetadata, OffsetStore, TopicPartition
from wharf.core.streams.partitioner import RoundRobin, key_partition
from wharf.core.streams.producer_state import ProducerIdAllocator
from wharf.core.streams.topics import TopicManager
from wharf.core.streams.view import TopicsView, TopicView
from wharf.core.timer_chain import TimerChain
from wharf.core.users import UserStore
from wharf.errors import BrokerError
from wharf.storage.record_batch import Record, RecordInput

if TYPE_CHECKING:  # only in cluster mode, whose drivers are an optional extra
    from wharf.core.cluster_node import ClusterNode
    from wharf.core.streams.cluster_topics import ClusterTopicManager

__all__ = ["Broker"]

log = logging.getLogger(__name__)

MAX_PRODUCER_EPOCH = 2**15 - 2  # the last epoch that can still be bumped


class Broker:
    """A broker over one data directory; create it with :meth:`open` (or :meth:`start`)."""

    topics: TopicsView  # local topics, or in cluster mode the cluster's
    offsets: GroupStore
    groups: GroupCoordinator
    producer_ids: ProducerIdAllocator
    vhosts: VhostRegistry  # queues: virtual hosts with exchanges, queues, bindings
    users: UserStore  # AMQP and Kafka SASL logins, saved with the queue definitions

    def __init__(
        self, path: Path, config: BrokerConfig, clock: Clock, cluster: ClusterNode | None = None
    ) -> None:
        self.path = path
        self.cluster = cluster
        """Set in cluster mode: streams live in the cluster's engines, not under ``path``."""
        self.config = config
        self.clock = clock
        self.stats = BrokerStats()  # this broker's latency histograms (fsync, requests, HTTP)
        self._lock = DataDirLock(path)
        self._closed = False
        self._fsync_executor = fsync_executor()  # every log's fsyncs (core/durability.py)
        self._maintenance = TimerChain(
            clock, self.run_maintenance, self._maintenance_interval_s, "maintenance"
        )
        self._cluster_topics: ClusterTopicManager | None = None  # cluster mode's topics
        self._round_robin: dict[str, RoundRobin] = {}
        self._subscriptions: set[QueueSubscription] = set()
        self._subscription_count = 0
        self._gets = GetHolder()

    @classmethod
    @asynccontextmanager
    async def open(
        cls,
        path: str | os.PathLike[str],
        config: BrokerConfig | None = None,
        *,
        clock: Clock | None = None,
        cluster: ClusterNode | None = None,
    ) -> AsyncIterator[Broker]:
        """Open (creating if needed) the broker stored at ``path``; close it on exit.

        Raises :class:`~wharf.core.data_dir_lock.DataDirInUseError` (a ResourceLockedError
        naming the holder's pid) when another broker has the directory open."""
        broker = await cls.start(path, config, clock=clock, cluster=cluster)
        try:
            yield broker
        finally:
            await broker.close()

    @classmethod
    async def start(
        cls,
        path: str | os.PathLike[str],
        config: BrokerConfig | None = None,
        *,
        clock: Clock | None = None,
        cluster: ClusterNode | None = None,
    ) -> Broker:
        """Open the broker without a ``with`` block; the caller must ``await broker.close()``."""
        broker = cls(Path(path), config or BrokerConfig(), clock or Clock(), cluster)
        try:
            broker._lock.acquire()  # DataDirInUseError names the broker in the way
            await broker._start_components()
        except BaseException:
            await broker.close()
            raise
        return broker

    async def _start_components(self) -> None:
        """Open every component, in dependency order."""
        # streams: their logs are opened (recovered, fsynced) on the fsync pool
        pool = self._fsync_executor
        self.producer_ids = ProducerIdAllocator(self.path, pool)
        fsync_latency = self.stats.fsync
        if self.cluster is not None:
            from wharf.core.streams.cluster_streams import open_cluster_topics

            self._cluster_topics = await open_cluster_topics(self.cluster, self.config, self.clock)
            self.topics = self._cluster_topics
        else:
            self.topics = await run_off_loop(
                pool,
                partial(TopicManager.open, self.path, self.config, pool, fsync_latency, self.clock),
            )
        placement = None
        if self.cluster is None:
            self.offsets = await run_off_loop(
                pool,
                partial(
                    OffsetStore.open,
                    self.path,
                    fsync=self.config.fsync,
                    fsync_interval_ms=self.config.fsync_interval_ms,
                    fsync_latency=fsync_latency,
                    executor=pool,
                    clock=self.clock,
                ),
            )
        else:  # committed offsets in the database; each node coordinates its share of groups
            cluster_offsets = ClusterOffsetStore(self.cluster)
            placement = GroupPlacement(self.cluster, cluster_offsets)
            self.offsets = cluster_offsets
        self.groups = GroupCoordinator(
            self.config,
            self.clock,
            self.offsets,
            partition_exists=self.topics.partition_exists,
            placement=placement,
        )
        self.topics.start()
        self.offsets.start()
        self.groups.start()
        # queues, and the users (restored from the queue definitions, where they are saved)
        self.users = UserStore.with_defaults()
        if self.cluster is not None:  # the cluster's queues, in its database
            from wharf.core.queues.cluster_registry import ClusterVhostRegistry

            self.vhosts = await ClusterVhostRegistry.open_cluster(
                self.path / "queues", self.config, self.clock, self.users, self.cluster
            )
        else:
            self.vhosts = await VhostRegistry.open(
                self.path / "queues",
                self.config,
                self.clock,
                self.users,
                fsync_latency=fsync_latency,
                executor=self._fsync_executor,
            )
        # background work
        self._maintenance.start()

    async def close(self) -> None:
        """Stop background work, flush and close every log, release the directory lock."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._maintenance.close()
            self._gets.open = False
            for subscription in list(self._subscriptions):
                subscription.close()  # unsettled messages return; iterators stop
            self._subscriptions.clear()
            if hasattr(self, "vhosts"):
                await self.vhosts.close()
            if hasattr(self, "groups"):
                self.groups.close()
                await self.groups.wait_persisted()
            if hasattr(self, "topics"):
                await self.topics.close()
            if hasattr(self, "offsets"):
                await self.offsets.close()
        finally:
            self._fsync_executor.shutdown(wait=True)
            self._lock.release()

    @property
    def closed(self) -> bool:
        return self._closed

    async def save_users(self) -> None:
        """Write :attr:`users` to disk (with the queue definitions) after changing them;
        returns once they are on disk."""
        await self.vhosts.save()

    # ------------------------------------------------------------------ embedded streams API

    async def create_topic(
        self,
        name: str,
        partitions: int | None = None,
        configs: Mapping[str, str | None] | None = None,
    ) -> TopicView:
        """Create a topic (Kafka config names in ``configs``, e.g. ``retention.ms``)."""
        return await self.topics.create(name, partitions, configs)

    async def delete_topic(self, name: str) -> None:
        """Delete a topic, its data, and every group's committed offsets for it."""
        await self.topics.delete(name)
        await self.offsets.delete_topic(name)

    async def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Sequence[tuple[str, bytes | None]] = (),
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> tuple[int, int]:
        """Append one record; returns ``(partition, offset)`` once it is acknowledged.

        Without ``partition``, a keyed record goes where Kafka clients would put it
        (murmur2 of the key) and keyless records are spread round robin. The topic is created
        with defaults if it does not exist and ``auto_create_topics`` is on.
        """
        target = await self.topics.ensure(topic)
        count = len(target.partitions)
        if partition is None:
            if key is not None:
                partition = key_partition(key, count)
            else:
                partition = self._round_robin.setdefault(topic, RoundRobin()).next(count)
        result = await self.topics.partition(topic, partition).append_records(
            [RecordInput(key, value, tuple(headers), timestamp_ms)], now_ms=self.clock.now_ms()
        )
        return partition, result.base_offset

    async def fetch(
        self,
        topic: str,
        partition: int,
        offset: int,
        *,
        max_records: int = 500,
        timeout_s: float = 0.0,
    ) -> list[Record]:
        """Records from ``offset`` on (at most ``max_records``), waiting up to ``timeout_s``
        for the first one to arrive when there is none yet."""
        part = self.topics.partition(topic, partition)
        if timeout_s > 0 and part.high_watermark <= offset:
            await part.wait_for_data(offset, timeout_s)
        return await part.fetch_records(offset, max_records)

    async def commit_offsets(
        self, group: str, offsets: Mapping[tuple[str, int], int], metadata: str = ""
    ) -> None:
        """Commit ``{(topic, partition): next offset to read}`` for a group that manages its
        own assignment (no membership). Raises :class:`StreamsError` if any is refused."""
        results = await self.groups.commit_offsets(
            group,
            {TopicPartition(t, p): OffsetAndMetadata(o, metadata) for (t, p), o in offsets.items()},
        )
        for tp, code in results.items():
            if code is not ErrorCode.NONE:
                raise StreamsError(
                    f"commit of {tp.topic}-{tp.partition} refused: {code.name}", code
                )

    def committed_offsets(
        self, group: str, partitions: Iterable[tuple[str, int]] | None = None
    ) -> dict[tuple[str, int], int]:
        """The group's committed offsets (partitions without one are left out)."""
        wanted = None if partitions is None else [TopicPartition(t, p) for t, p in partitions]
        return {
            (tp.topic, tp.partition): entry.offset
            for tp, entry in self.groups.fetch_offsets(group, wanted).items()
        }

    async def init_producer_id(
        self, producer_id: int = -1, producer_epoch: int = -1
    ) -> tuple[int, int]:
        """Kafka's InitProducerId for idempotent producers: ``(producer id, epoch)``.

        Without a producer id, a fresh id with epoch 0. With the id and epoch a producer
        already has (KIP-360), the same id with the next epoch, which fences the old epoch; a
        fresh id once the epoch would overflow.
        """
        cluster = self._cluster_topics
        if cluster is not None:
            return await self._cluster_producer_id(cluster, producer_id, producer_epoch)
        if producer_id < 0:
            return await self.producer_ids.allocate(), 0
        if not self.producer_ids.allocated(producer_id) or producer_epoch < 0:
            raise StreamsError(
                f"producer id {producer_id} with epoch {producer_epoch} was not issued here",
                ErrorCode.INVALID_PRODUCER_ID_MAPPING,
            )
        if producer_epoch >= MAX_PRODUCER_EPOCH:
            return await self.producer_ids.allocate(), 0
        return producer_id, producer_epoch + 1

    @staticmethod
    async def _cluster_producer_id(
        topics: ClusterTopicManager, producer_id: int, producer_epoch: int
    ) -> tuple[int, int]:
        """InitProducerId in a cluster: ids come from the catalogue's sequence, so they are
        unique across nodes; a producer re-initialising its id (KIP-360) gets the next epoch
        (the cluster's idempotence state checks epochs per partition)."""
        if producer_id < 0 or producer_epoch >= MAX_PRODUCER_EPOCH:
            return await topics.allocate_producer_id(), 0
        if producer_epoch < 0:
            raise StreamsError(
                f"producer id {producer_id} needs its current epoch to be re-initialised",
                ErrorCode.INVALID_PRODUCER_ID_MAPPING,
            )
        return producer_id, producer_epoch + 1

    # ------------------------------------------------------------------ embedded queues API

    async def declare_queue(
        self,
        name: str,
        *,
        durable: bool = True,
        auto_delete: bool = False,
        arguments: Mapping[str, Any] | None = None,
        passive: bool = False,
        vhost: str = DEFAULT_VHOST,
    ) -> Queue:
        """Declare a queue (AMQP x-arguments in ``arguments``, e.g. ``x-max-priority``,
        ``x-dead-letter-exchange``, ``x-message-ttl``); redeclaring with the same settings
        returns the existing queue, with other settings raises PreconditionError."""
        return await self._vhost(vhost).declare_queue(
            name, durable=durable, auto_delete=auto_delete, arguments=arguments, passive=passive
        )

    async def delete_queue(
        self,
        name: str,
        *,
        if_unused: bool = False,
        if_empty: bool = False,
        vhost: str = DEFAULT_VHOST,
    ) -> int:
        """Delete a queue and its messages (returns how many were ready); its subscriptions
        end."""
        return await self._vhost(vhost).delete_queue(name, if_unused=if_unused, if_empty=if_empty)

    async def declare_exchange(
        self,
        name: str,
        type_: str = "direct",
        *,
        durable: bool = True,
        auto_delete: bool = False,
        internal: bool = False,
        arguments: Mapping[str, Any] | None = None,
        vhost: str = DEFAULT_VHOST,
    ) -> Exchange:
        """Declare an exchange: ``direct``, ``fanout``, ``topic``, ``headers`` or
        ``x-delayed-message``."""
        return await self._vhost(vhost).declare_exchange(
            name,
            type_,
            durable=durable,
            auto_delete=auto_delete,
            internal=internal,
            arguments=arguments,
        )

    async def bind_queue(
        self,
        queue: str,
        exchange: str,
        routing_key: str = "",
        arguments: Mapping[str, Any] | None = None,
        *,
        vhost: str = DEFAULT_VHOST,
    ) -> None:
        """Route ``exchange``'s messages matching ``routing_key`` (or header ``arguments``)
        to ``queue``."""
        await self._vhost(vhost).bind_queue(queue, exchange, routing_key, arguments)

    def queue(self, name: str, *, vhost: str = DEFAULT_VHOST) -> Queue:
        """The queue (counters and gauges: ``message_count``, ``unacked_count``, ...);
        raises NotFoundError."""
        return self._vhost(vhost).get_queue(name)

    async def publish(
        self,
        to: str,
        body: bytes,
        *,
        routing_key: str | None = None,
        headers: Mapping[str, Any] | None = None,
        priority: int | None = None,
        persistent: bool = True,
        expiration_ms: int | None = None,
        vhost: str = DEFAULT_VHOST,
        **properties: Any,
    ) -> PublishResult:
        """Publish one message and return once it is safe.

        Without ``routing_key``, ``to`` names a queue (NotFoundError if there is none) and the
        message goes straight to it; with one, ``to`` names an exchange ("" is the default
        exchange) that routes it. ``properties`` takes the other AMQP properties
        (content_type, correlation_id, reply_to, message_id, timestamp, type, app_id, ...).
        A persistent message on a durable queue is on disk when this returns (under
        ``fsync=always``). The :class:`PublishResult` says whether it was ``routed`` to any
        queue and whether a full queue ``rejected`` it (x-overflow reject-publish).
        """
        host = self._vhost(vhost)
        if routing_key is None:
            host.get_queue(to)
            exchange, key = "", to
        else:
            exchange, key = to, routing_key
        message = Message.build(
            exchange,
            key,
            body,
            headers=headers,
            persistent=persistent,
            priority=priority,
            expiration_ms=expiration_ms,
            **properties,
        )
        return await host.publish(message)

    async def get(
        self, queue: str, *, no_ack: bool = False, vhost: str = DEFAULT_VHOST
    ) -> ReceivedMessage | None:
        """Take the next ready message of ``queue``, or None if it has none ready.

        Without ``no_ack`` the message stays handed out until it is acked or rejected (or the
        broker restarts, which returns it)."""
        delivery = await self._vhost(vhost).get_queue(queue).fetch(no_ack)
        return None if delivery is None else ReceivedMessage(delivery, self._gets, settled=no_ack)

    @asynccontextmanager
    async def consume(
        self,
        queue: str,
        *,
        prefetch: int = 100,
        no_ack: bool = False,
        exclusive: bool = False,
        tag: str | None = None,
        vhost: str = DEFAULT_VHOST,
    ) -> AsyncIterator[QueueSubscription]:
        """Subscribe to ``queue``: ``async with broker.consume(q) as messages: async for m in
        messages: ... await m.ack()``.

        At most ``prefetch`` messages are received and unsettled at a time (0: no limit).
        With ``no_ack`` each message counts as acknowledged once the iterator yields it.
        Leaving the block returns every unsettled message to the queue, redelivered; the
        iterator stops when the block is left, the queue is deleted or the broker closes.
        """
        target = self._vhost(vhost).get_queue(queue)
        if tag is None:
            self._subscription_count += 1
            tag = f"embedded-{self._subscription_count}"
        subscription = QueueSubscription(
            target, tag, prefetch=prefetch, no_ack=no_ack, exclusive=exclusive
        )
        await target.admit(subscription)
        subscription.start()
        self._subscriptions.add(subscription)
        try:
            yield subscription
        finally:
            self._subscriptions.discard(subscription)
            subscription.close()

    def _vhost(self, name: str) -> VirtualHost:
        if self._closed:
            raise BrokerError("the broker is closed")
        return self.vhosts[name]

    # ------------------------------------------------------------------ background work

    def _maintenance_interval_s(self) -> float:
        return max(self.config.retention_check_interval_ms, 1) / 1000

    async def run_maintenance(self) -> None:
        """One pass of retention, offset expiry and closing idle partition logs (run every
        retention check interval)."""
        try:
            deleted = self.topics.enforce_retention(self.clock.now_ms())
            expired = await self.groups.expire_offsets()
            await self.topics.unload_idle()
        except Exception:
            log.exception("maintenance pass failed; retrying at the next interval")
            return
        if deleted or expired:
            log.info(
                "retention deleted %d segments; %d committed offsets expired", deleted, expired
            )
