"""The virtual hosts of a node in cluster mode (imported only then: the cluster's drivers are
an optional extra).

How it works: :class:`ClusterVhostRegistry` is the broker's ``vhosts`` in cluster mode. Its
:class:`QueueEngine` is what the node's cluster vhosts and queues share:

* the **definitions cache**: :meth:`QueueEngine.refresh` reloads every definition from the
  database and applies it to the vhosts (:meth:`ClusterVirtualHost.apply`); reloads are
  coalesced (a caller waits for one that *started* after its call, so it sees its own change).
  A reload is asked for by every notification on the definitions channel, when the
  ``LISTEN`` connection (re)opens, and every :data:`REFRESH_INTERVAL_S` in any case;
* the **message paths**: the group-committing :class:`MessageWriter`, the :class:`Settler`,
  claims, each fenced as :mod:`wharf.cluster.queues.messages` says, all given the node's
  dead-letter routing (:mod:`wharf.core.queues.cluster_dead_letter`); a notification that a
  queue got messages makes its local part claim if its consumers have credit. The node
  listens on that channel only while it has consumers: its first consumer registration
  replaces its ``LISTEN`` connection by one that adds the channel, and once no queue has had
  consumers here for :data:`MESSAGES_IDLE_S` it goes back to one without. So a node that
  only publishes is not woken by every message of the cluster, and each node keeps one
  listening session (PostgreSQL signals every listening session of the database at every
  notification). Each time a listener connects, the definitions are reloaded and every queue
  claims, which covers what was committed before it listened;
* the **sweep**: every :data:`SWEEP_INTERVAL_S`, on the node's lease (one node at a time),
  returning the claims of dead epochs, deleting their exclusive queues and expired messages
  (dead-lettering them where the queue says so);
* **delayed messages**: every :data:`RELEASE_INTERVAL_S`, while the node knows of a delayed
  exchange, one node at a time releases the due ones (:mod:`wharf.core.queues.cluster_delayed`);
* **large bodies** (:mod:`wharf.cluster.queues.bodies`): PUT by the writer before the publish
  transaction, read back after a claim (a row whose body cannot be read is released), and
  collected every ``cluster_jobs.interval_ms`` by one node at a time;
* the **owners** of exclusive queues: a token per local connection, stored with the queue
  beside the node id and epoch;
* the **consumer registry** (:mod:`wharf.cluster.queues.consumers`): registrations made before
  consume-ok, removals retried every :data:`SWEEP_INTERVAL_S` until they commit or the lease
  is gone; which consumer is active on a single-active-consumer queue is learned from the
  removal that promoted it, from a notification on the consumers channel, and, as the bounded
  fallback, read every :data:`SWEEP_INTERVAL_S` for the queues with consumers here.

Users and permissions are the cluster's too: one document in the database, reloaded with the
definitions (a node's ``definitions.json``, if it has one, seeds an empty cluster).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Coroutine, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wharf.cluster.catalog import NodeLease
from wharf.cluster.database import DatabaseError
from wharf.cluster.nodes import LeaseLostError
from wharf.cluster.notifications import NotificationListener
from wharf.cluster.queues import consumers as cons
from wharf.cluster.queues import definitions as defs
from wharf.cluster.queues import held, replies
from wharf.cluster.queues import messages as msgs
from wharf.cluster.queues.bodies import Bodies, ListingCursor, collect_bodies
from wharf.cluster.queues.held import NewHeld
from wharf.core.clock import Clock
from wharf.core.config import BrokerConfig
from wharf.core.queues.cluster_dead_letter import ClusterDeadLetterRouting
from wharf.core.queues.cluster_delayed import release_held
from wharf.core.queues.cluster_queue import ClusterQueue
from wharf.core.queues.cluster_vhost import ClusterVirtualHost
from wharf.core.queues.definitions import load_definitions
from wharf.core.queues.exchanges import DelayedExchange
from wharf.core.queues.message import Message
from wharf.core.queues.registry import DEFAULT_VHOST, VhostRegistry
from wharf.core.queues.vhost import VirtualHost
from wharf.core.users import UserStore
from wharf.errors import NotFoundError, PreconditionError, StorageError

if TYPE_CHECKING:
    from wharf.core.cluster_node import ClusterNode

__all__ = [
    "RELEASE_INTERVAL_S",
    "REFRESH_INTERVAL_S",
    "SWEEP_INTERVAL_S",
    "ClusterVhostRegistry",
    "QueueEngine",
]

log = logging.getLogger(__name__)

SWEEP_INTERVAL_S = 1.0
RELEASE_INTERVAL_S = 0.2
"""How often a node looks for due delayed messages (the most a delay runs over, plus a commit)."""
REFRESH_INTERVAL_S = 10.0
MESSAGES_IDLE_S = 30.0
"""How long the node keeps hearing about messages after its last consumer left."""
_CHANNELS = (defs.CHANNEL, cons.CHANNEL, replies.CHANNEL)
"""What a node always listens to; ``msgs.CHANNEL`` is added while it has consumers."""
REPLY_MAX_AGE_S = 60.0
"""Direct replies forwarded to a node that did not take them (it died) go after this."""


class QueueEngine:
    """What the cluster vhosts and queues of one node share; see the module docstring."""

    def __init__(
        self, node: ClusterNode, path: Path, config: BrokerConfig, clock: Clock,
        registry: ClusterVhostRegistry,
    ) -> None:  # fmt: skip
        self.node = node
        self.node_id = node.node_id
        self.path = path
        self.config = config
        self.clock = clock
        self._registry = registry
        jobs = config.cluster_jobs
        self.bodies = Bodies(node.store, jobs.amqp_body_threshold_bytes)
        self._listing = ListingCursor()  # where the body collector's orphan sweep stands
        self.dead_letters = ClusterDeadLetterRouting(registry.find_queue)
        self._writer = msgs.MessageWriter(node.db, self.dead_letters, self.bodies)
        self.settler = msgs.Settler(node.db, node.node_id, routing=self.dead_letters)
        self._listener = self._listening_to(_CHANNELS)
        self._hearing = False  # whether the listener has msgs.CHANNEL (consumers are here)
        self._started = False
        self._closing: set[asyncio.Task[None]] = set()  # listeners replaced, being closed
        self._registered_at = 0.0  # monotonic time of the last consumer registration
        self._tasks: set[asyncio.Task[None]] = set()
        self._wanted = 0
        self._applied = 0
        self._loader: asyncio.Task[None] | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._releasing: asyncio.Task[None] | None = None
        self._unreadable: list[tuple[int, int]] = []  # (epoch, seq) to release: body unread
        self._taking_replies = self._replies_again = False
        self.owners: dict[str, object] = {}  # connection token -> local connection
        self._tokens: dict[int, str] = {}  # id(connection) -> token
        self.sweeps = 0  # sweeps this node ran, for tests
        self.released = 0  # delayed messages this node released, for tests
        self.bodies_deleted = 0  # body objects this node's collector deleted, for tests

    # ---------------------------------------------------------------------------- leases

    def epoch(self) -> int | None:
        return self.node.membership.epoch

    def lease_epoch(self) -> int:
        """This node's epoch; ``LeaseLostError`` while it holds no lease."""
        return self.node.lease().epoch

    def owner_token(self, owner: object) -> str:
        token = self._tokens.get(id(owner))
        if token is None or self.owners.get(token) is not owner:
            token = secrets.token_hex(8)
            self._tokens[id(owner)] = token
            self.owners[token] = owner
        return token

    def forget_owner(self, owner: object) -> None:
        token = self._tokens.pop(id(owner), None)
        if token is not None:
            self.owners.pop(token, None)

    # ---------------------------------------------------------------------- definitions

    async def refresh(self) -> None:
        """Return once a reload that began after this call has been applied."""
        self._wanted += 1
        target = self._wanted
        while self._applied < target:
            if self._loader is None:
                self._loader = asyncio.get_running_loop().create_task(self._load())
            await asyncio.shield(self._loader)

    async def _load(self) -> None:
        try:
            while self._applied < self._wanted:
                generation = self._wanted
                loaded = await defs.load_definitions(self.node.db)
                self._registry.apply(loaded)
                self._applied = generation
        finally:
            self._loader = None

    def _refresh_soon(self) -> None:
        self.spawn(self._refresh_logged())

    async def _refresh_logged(self) -> None:
        try:
            await self.refresh()
        except StorageError as exc:
            log.warning("cannot reload the AMQP definitions (keeping the cache): %s", exc)

    async def declare_exchange(self, row: defs.ExchangeRow) -> defs.ExchangeRow:
        return await defs.declare_exchange(self.node.db, row)

    async def delete_exchange(self, vhost: str, name: str) -> None:
        await defs.delete_exchange(self.node.db, vhost, name)

    async def declare_queue(self, row: defs.QueueRow) -> tuple[defs.QueueRow, bool]:
        return await defs.declare_queue(self.node.db, row)

    async def delete_queue(self, queue_id: int) -> int:
        return await defs.delete_queue(self.node.db, queue_id)

    async def bind(self, row: defs.BindingRow) -> bool:
        return await defs.bind(self.node.db, row)

    async def unbind(self, row: defs.BindingRow) -> bool:
        return await defs.unbind(self.node.db, row)

    # -------------------------------------------------------------------------- messages

    def publish(
        self, rows: Sequence[msgs.NewMessage], held: Sequence[NewHeld] = ()
    ) -> asyncio.Future[bool]:
        committed = self._writer.publish(rows, held)
        committed.add_done_callback(_retrieve)  # unconfirmed publishes do not wait for it
        return committed

    async def claim(
        self, queue_id: int, count: int, token: int, *, dead_letters: bool = False,
        consumer: int | None = None,
    ) -> list[msgs.ClaimedMessage]:
        """Claim rows (see :func:`msgs.claim`) with their bodies read from the object store
        where they are kept there; a row whose body cannot be read is released, unchanged, at
        the next housekeeping tick (so a store that is down is not asked in a tight loop)."""
        claimed = await self._claim(queue_id, count, token, dead_letters, consumer)
        return await self._with_bodies(claimed)

    async def _claim(
        self, queue_id: int, count: int, token: int, dead_letters: bool, consumer: int | None
    ) -> list[msgs.ClaimedMessage]:
        lease = self.node.lease()
        routing = self.dead_letters if dead_letters else None
        try:
            return await msgs.claim(
                self.node.db, lease, queue_id, count, token, routing, consumer
            )
        except DatabaseError as exc:
            if not exc.outcome_unknown:
                raise
        # it may have committed: find what it claimed (until the database answers again)
        while True:
            try:
                return await msgs.claimed_with(self.node.db, lease, queue_id, token)
            except DatabaseError as exc:
                log.warning("cannot tell what a claim on queue %d took yet: %s", queue_id, exc)
                await asyncio.sleep(SWEEP_INTERVAL_S)

    async def _with_bodies(
        self, claimed: list[msgs.ClaimedMessage]
    ) -> list[msgs.ClaimedMessage]:
        keys = [m.body_key for m in claimed if m.body_key is not None]
        if not keys:
            return claimed
        bodies = await self.bodies.fetch(keys)
        out: list[msgs.ClaimedMessage] = []
        for message in claimed:
            body = bodies.get(message.body_key) if message.body_key is not None else None
            if isinstance(body, Exception):
                log.warning("message %d not delivered now, its body is unreadable: %s",
                            message.seq, body)  # fmt: skip
                self._unreadable.append((message.epoch, message.seq))
            elif body is None:
                out.append(message)
            else:
                out.append(replace(message, body=body, body_key=None))
        if not out:
            raise StorageError("no claimed body could be read from the object store")
        return out

    def delete(self, epoch: int, seqs: list[int]) -> None:
        self.settler.delete(epoch, seqs)

    def dead_letter(self, epoch: int, seqs: list[int], reason: str) -> None:
        self.settler.dead_letter(epoch, seqs, reason)

    def release(self, epoch: int, seqs: list[int], *, delivered: bool) -> None:
        self.settler.release(epoch, seqs, delivered=delivered)

    async def counts(self, queue_id: int) -> tuple[int, int]:
        epoch = self.epoch()
        lease = None if epoch is None else NodeLease(self.node_id, epoch)
        return await cons.counts(self.node.db, lease, queue_id)

    async def touch(self, queue_id: int) -> None:
        await cons.touch(self.node.db, self.node.lease(), queue_id)

    # ------------------------------------------------------------------------- consumers

    async def register_consumer(
        self, queue_id: int, tag: str, *, exclusive: bool
    ) -> tuple[cons.Registration | None, int]:
        lease = self.node.lease()
        self._hear_messages()
        token = secrets.randbits(63)
        while True:  # run again while the outcome is unknown: the token makes it the same one
            try:
                registration = await cons.register(
                    self.node.db, lease, queue_id, tag, token, exclusive=exclusive
                )
            except DatabaseError as exc:
                if not exc.outcome_unknown:
                    raise
                log.warning("cannot tell whether consumer '%s' was registered yet: %s", tag, exc)
                await asyncio.sleep(SWEEP_INTERVAL_S)
                continue
            return registration, lease.epoch

    def deregister_consumer(self, epoch: int, consumer_id: int) -> None:
        self.spawn(self._deregister(NodeLease(self.node_id, epoch), consumer_id))

    async def _deregister(self, lease: NodeLease, consumer_id: int) -> None:
        # the consumer's requeues first: under single active consumer the next one gets them
        # before anything newer
        await self.settler.drained()
        while True:
            try:
                departure = await cons.deregister(self.node.db, lease, [consumer_id])
            except LeaseLostError:
                return  # the sweep removes it with its epoch
            except StorageError as exc:
                log.warning("cannot remove consumer %d yet, trying again: %s", consumer_id, exc)
                await asyncio.sleep(SWEEP_INTERVAL_S)
                continue
            if departure.promoted:
                await self._learn_active(departure.promoted)
            if departure.deleted:
                await self._refresh_logged()
            return

    async def _learn_active(self, queue_ids: list[int]) -> None:
        """Read which consumers are active on these single-active-consumer queues."""
        queues = [q for i in queue_ids if (q := self._registry.queue_by_id(i)) is not None]
        queues = [q for q in queues if q.args.single_active_consumer]
        if not queues:
            return
        try:
            active = await cons.active_consumers(self.node.db, [q.queue_id for q in queues])
        except StorageError as exc:
            log.debug("cannot read the active consumers: %s", exc)
            return
        for queue in queues:
            queue.learn_active(active.get(queue.queue_id))

    async def _learn_active_here(self) -> None:
        """The fallback: the single-active-consumer queues with consumers on this node."""
        await self._learn_active(self._registry.single_active_in_use())

    async def purge(self, queue_id: int) -> int:
        return await msgs.purge(self.node.db, queue_id)

    def spawn(self, body: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(body)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ notifications

    def _notified(self, channel: str, payload: str) -> None:
        if channel == defs.CHANNEL:
            self._refresh_soon()
            return
        if channel == replies.CHANNEL:
            if payload == str(self.node.broker_id):
                self._take_replies_soon()
            return
        if channel == cons.CHANNEL:
            self.spawn(self._learn_active([int(p) for p in payload.split(",") if p.isdigit()]))
            return
        for part in payload.split(","):
            if part.isdigit():
                queue = self._registry.queue_by_id(int(part))
                if queue is not None:
                    queue.wake()

    def _listening_to(self, channels: Sequence[str]) -> NotificationListener:
        return NotificationListener(
            self.node.db, channels, self._notified, self._reconnected, what="AMQP"
        )

    def _hear_messages(self) -> None:
        """Listen for the queues' messages too (a consumer is coming)."""
        self._registered_at = time.monotonic()
        if not self._hearing:
            self._hearing = True
            self._listen_anew((*_CHANNELS, msgs.CHANNEL))

    def _stop_hearing_messages(self) -> None:
        """Stop listening for messages once no consumer has been here for a while."""
        if (
            self._hearing
            and time.monotonic() - self._registered_at >= MESSAGES_IDLE_S
            and not self._registry.consumed_here()
        ):
            self._hearing = False
            self._listen_anew(_CHANNELS)

    def _listen_anew(self, channels: Sequence[str]) -> None:
        """Replace the listener by one on ``channels``. Its connecting reloads and wakes
        everything, which covers what the old one could have said meanwhile."""
        old, self._listener = self._listener, self._listening_to(channels)
        if self._started:
            self._listener.start()
            closing = asyncio.get_running_loop().create_task(old.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)

    @property
    def hears_messages(self) -> bool:
        """Whether the node listens for the queues' messages now."""
        return self._hearing

    def _reconnected(self) -> None:
        self._refresh_soon()
        self.spawn(self._learn_active_here())
        self._registry.wake_all()

    # ---------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._started = True
        self._listener.start()
        loop = asyncio.get_running_loop()
        self._housekeeping = loop.create_task(self._run_housekeeping(), name="wharf amqp sweep")
        self._releasing = loop.create_task(self._run_releases(), name="wharf amqp delayed")

    async def _run_releases(self) -> None:
        while True:
            await asyncio.sleep(RELEASE_INTERVAL_S)
            if self._registry.has_delayed_exchanges():  # else there is nothing held
                await self.release_due()

    async def release_due(self) -> int:
        """One round of releasing due delayed messages (0 when another node is at it)."""
        try:
            count = await held.release_due(
                self.node.db, self.node.lease(),
                partial(release_held, vhost_of=self._registry.cluster_vhost),
            )  # fmt: skip
        except StorageError as exc:  # no lease yet, or the database: next interval
            log.debug("delayed messages not released: %s", exc)
            return 0
        self.released += count or 0
        return count or 0

    async def _expire_replies(self) -> None:
        try:
            await replies.expire(self.node.db, REPLY_MAX_AGE_S)
        except StorageError as exc:
            log.debug("old direct replies not deleted: %s", exc)

    async def collect_bodies(self) -> None:
        """One round of the collector of body objects (logged, never raised)."""
        try:
            done = await collect_bodies(
                self.node.db, self.bodies.store, self.node.lease(),
                self.config.cluster_jobs.orphan_grace_ms / 1000, self._listing,
            )  # fmt: skip
        except StorageError as exc:  # no lease yet, the database or the object store
            log.warning("AMQP body objects not collected: %s", exc)
            return
        self.bodies_deleted += done.deleted + done.orphans

    # --------------------------------------------------------------------- direct replies

    def forward_reply(self, broker_id: int, reply: replies.Reply) -> asyncio.Future[None]:
        """Send a direct reply to the node ``broker_id``; done once it is in the database."""
        forwarded = asyncio.get_running_loop().create_task(
            replies.forward(self.node.db, broker_id, reply)
        )
        forwarded.add_done_callback(_retrieve)  # unconfirmed publishes do not wait for it
        return forwarded

    def _take_replies_soon(self) -> None:
        if self._taking_replies:
            self._replies_again = True
            return
        self._taking_replies = True
        self.spawn(self._take_replies())

    async def _take_replies(self) -> None:
        """Hand the replies other nodes forwarded here to their addresses' consumers (a reply
        whose consumer is gone is dropped, as on one node)."""
        try:
            while True:
                self._replies_again = False
                try:
                    taken = await replies.take(self.node.db, self.node.broker_id)
                except StorageError as exc:  # the database: next notification or tick
                    log.debug("direct replies not taken: %s", exc)
                    return
                for reply in taken:
                    vhost = self._registry.cluster_vhost(reply.vhost)
                    if vhost is not None:
                        vhost.router.replies.deliver(reply.routing_key, Message(
                            "", reply.routing_key, reply.properties, reply.body))  # fmt: skip
                if not self._replies_again:
                    return
        finally:
            self._taking_replies = False

    def _release_unreadable(self) -> None:
        unreadable, self._unreadable = self._unreadable, []
        for epoch, seq in unreadable:
            self.release(epoch, [seq], delivered=False)

    async def _run_housekeeping(self) -> None:
        since_refresh = since_collect = 0.0
        while True:
            await asyncio.sleep(SWEEP_INTERVAL_S)
            self._release_unreadable()
            since_refresh += SWEEP_INTERVAL_S
            since_collect += SWEEP_INTERVAL_S
            self._take_replies_soon()  # the notification is a hint: look once a second
            if since_refresh >= REFRESH_INTERVAL_S:
                since_refresh = 0.0
                self._refresh_soon()
                self.spawn(self._expire_replies())
            await self._learn_active_here()
            self._stop_hearing_messages()
            if since_collect >= self.config.cluster_jobs.interval_ms / 1000:
                since_collect = 0.0
                self.spawn(self.collect_bodies())
            try:
                result = await msgs.sweep(self.node.db, self.node.lease(), self.dead_letters)
            except StorageError as exc:  # no lease yet, or the database: next interval
                log.debug("AMQP sweep not run: %s", exc)
                continue
            if result.swept:
                self.sweeps += 1
            if result.released or result.queues_deleted:
                log.info(
                    "sweep: %d claims of dead nodes released, %d exclusive queues deleted",
                    result.released, result.queues_deleted,
                )  # fmt: skip
            swept = result.consumers
            if swept.removed or swept.expired:
                log.info(
                    "sweep: %d consumers of dead nodes removed, %d auto-delete queues and %d "
                    "idle x-expires queues deleted",
                    swept.removed, swept.auto_deleted, swept.expired,
                )  # fmt: skip

    async def close(self) -> None:
        """Stop listening and sweeping, then commit the publishes and settlements queued."""
        self._started = False  # a consumer registering now starts no listener
        for task in (self._housekeeping, self._releasing):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._listener.close()
        await asyncio.gather(*self._closing)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._writer.close()
        self._release_unreadable()
        await self.settler.close()


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


class ClusterVhostRegistry(VhostRegistry):
    """The broker's ``vhosts`` in cluster mode; see the module docstring."""

    engine: QueueEngine

    @classmethod
    async def open_cluster(
        cls,
        path: Path,
        config: BrokerConfig,
        clock: Clock,
        users: UserStore,
        node: ClusterNode,
        *,
        start_timer: bool = True,
    ) -> ClusterVhostRegistry:
        """The node's view of the cluster's vhosts and users, loaded, with its listener and
        sweep running."""
        registry = cls(path, config, clock, users)
        registry.engine = QueueEngine(node, path, config, clock, registry)
        data = await asyncio.to_thread(load_definitions_dir, path)
        if data is not None:
            users.restore(data)
        await defs.seed_users(node.db, users.to_json())  # the first node's users, if none yet
        await registry.engine.refresh()
        registry.engine.start()
        if start_timer:
            registry._timer.start()
        return registry

    async def save(self) -> None:
        """Store the users and permissions in the database (every node reloads them)."""
        await defs.save_users(self.engine.node.db, self._users.to_json())

    def apply(self, loaded: defs.Definitions) -> None:
        if loaded.users is not None:
            self._users.restore(loaded.users)
        for name in loaded.vhosts:
            if name not in self._vhosts:
                self._vhosts[name] = self._cluster_vhost(name)
        for name in [n for n in self._vhosts if n not in loaded.vhosts]:
            vhost = self._vhosts.pop(name)
            assert isinstance(vhost, ClusterVirtualHost)
            vhost.apply([], [], [])
        for name, vhost in self._vhosts.items():
            assert isinstance(vhost, ClusterVirtualHost)
            vhost.apply(
                [e for e in loaded.exchanges if e.vhost == name],
                [q for q in loaded.queues if q.vhost == name],
                [b for b in loaded.bindings if b.vhost == name],
            )

    def _cluster_vhost(self, name: str) -> ClusterVirtualHost:
        vhost = ClusterVirtualHost(name, self.engine)
        vhost.wakeup = self._timer.wake
        return vhost

    def find_queue(self, queue_id: int) -> tuple[ClusterVirtualHost, ClusterQueue] | None:
        """The queue of that id in the cache, with its virtual host."""
        for vhost in self._vhosts.values():
            if isinstance(vhost, ClusterVirtualHost) and queue_id in vhost.by_id:
                return vhost, vhost.by_id[queue_id]
        return None

    def has_delayed_exchanges(self) -> bool:
        return any(
            isinstance(exchange, DelayedExchange)
            for vhost in self._vhosts.values()
            for exchange in vhost.exchanges.values()
        )

    def cluster_vhost(self, name: str) -> ClusterVirtualHost | None:
        vhost = self._vhosts.get(name)
        return vhost if isinstance(vhost, ClusterVirtualHost) else None

    def queue_by_id(self, queue_id: int) -> ClusterQueue | None:
        for vhost in self._vhosts.values():
            if isinstance(vhost, ClusterVirtualHost) and queue_id in vhost.by_id:
                return vhost.by_id[queue_id]
        return None

    def single_active_in_use(self) -> list[int]:
        """The single-active-consumer queues that have consumers on this node."""
        return [
            queue.queue_id
            for vhost in self._vhosts.values()
            if isinstance(vhost, ClusterVirtualHost)
            for queue in vhost.by_id.values()
            if queue.args.single_active_consumer and queue.consumers
        ]

    def consumed_here(self) -> bool:
        """Whether any queue has consumers on this node."""
        return any(
            queue.consumed_here
            for vhost in self._vhosts.values()
            if isinstance(vhost, ClusterVirtualHost)
            for queue in vhost.by_id.values()
        )

    def wake_all(self) -> None:
        for vhost in self._vhosts.values():
            if isinstance(vhost, ClusterVirtualHost):
                for queue in list(vhost.by_id.values()):
                    queue.wake()
            else:
                for other in list(vhost.queues.values()):
                    other.dispatch()

    async def create(self, name: str) -> VirtualHost:
        if not name:
            raise PreconditionError("a virtual host needs a name")
        await defs.create_vhost(self.engine.node.db, name)
        await self.engine.refresh()
        return self[name]

    async def delete(self, name: str) -> None:
        if name not in self._vhosts:
            raise NotFoundError(f"no vhost '{name}'")
        if name == DEFAULT_VHOST:
            raise PreconditionError("the default virtual host cannot be deleted in cluster mode")
        await defs.delete_vhost(self.engine.node.db, name)
        await self.engine.refresh()
        self._users.forget_vhost(name)
        await self.save()

    async def close(self) -> None:
        await self._timer.close()
        for vhost in list(self._vhosts.values()):
            await vhost.close()
        await self.engine.close()
        await self.definitions.close()


def load_definitions_dir(path: Path) -> dict[str, Any] | None:
    path.mkdir(parents=True, exist_ok=True)
    return load_definitions(path)
