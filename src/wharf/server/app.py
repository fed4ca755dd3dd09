"""The ``wharf serve`` process: lock the data directory, open the broker, run the listeners.

How it works: :func:`run` tunes the garbage collector for a broker (:func:`tune_gc`), picks the
event loop (uvloop when installed) and runs :func:`serve`, which

1. installs the SIGTERM/SIGINT handlers (:mod:`wharf.server.shutdown`),
2. in cluster mode (``cluster.database`` set), joins the cluster
   (:meth:`wharf.server.cluster.ClusterMember.join`: database, schema, object store),
3. opens the :class:`~wharf.core.broker.Broker` (given the cluster node in cluster mode), which
   takes the data-directory lock (:mod:`wharf.core.data_dir_lock`; the server refuses to start,
   naming the pid of the broker holding it, embedded or served) and runs recovery,
4. creates and starts every listener from the factories it is given, in order; in cluster mode
   registers the node with the ports they bound; then logs one
   ``wharf ready: <name>=<host>:<port> ...`` line naming every bound address (each accepts
   connections; the HTTP listener loads its application at its first connection, see
   :mod:`wharf.http.listener`),
5. waits for a signal, then stops the listeners in stages and closes the broker (final flush,
   then the lock is released), and in cluster mode leaves the cluster and closes its engines.

The factories are assembled by the composition root, ``wharf.cli.serve.command`` (the only layer
that may import both ``wharf.server`` and ``wharf.http``); see :mod:`wharf.server.listener` for the
interface each listener implements.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
from collections.abc import Callable, Coroutine, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from wharf.core.broker import Broker
from wharf.core.data_dir_lock import DataDirInUseError
from wharf.errors import WharfError
from wharf.server.listener import Endpoint, Listener, ListenerFactory
from wharf.server.logging_setup import format_address, log_fields
from wharf.server.settings import ServerSettings
from wharf.server.shutdown import ShutdownRequest, stop_listeners

if TYPE_CHECKING:  # cluster mode only: its drivers are an optional extra
    from wharf.server.cluster import ClusterMember

__all__ = ["StartupError", "run", "serve"]

logger = logging.getLogger("wharf.server")


class StartupError(WharfError):
    """The server could not start (a port is taken, the data directory is unusable, ...)."""


def _ready_line(endpoints: Sequence[Endpoint]) -> str:
    if not endpoints:
        return "wharf ready: no listeners"
    named = " ".join(f"{name}={format_address((host, port))}" for name, host, port in endpoints)
    return f"wharf ready: {named}"


async def _start_listeners(
    broker: Broker,
    settings: ServerSettings,
    factories: Sequence[ListenerFactory],
    started: list[Listener],
) -> list[Endpoint]:
    """Start each listener in order, appending it to ``started`` once it runs."""
    endpoints: list[Endpoint] = []
    for factory in factories:
        listener = factory(settings)
        name = listener.name
        try:
            bound = await listener.start(broker)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            message = f"cannot start the {name} listener on {settings.host}: {reason}"
            raise StartupError(message) from None
        started.append(listener)
        for endpoint in bound:
            logger.info(
                "%s listening on %s",
                endpoint[0],
                format_address(endpoint[1:]),
                extra=log_fields(listener=endpoint[0], host=endpoint[1], port=endpoint[2]),
            )
        endpoints.extend(bound)
    return endpoints


async def serve(
    settings: ServerSettings,
    factories: Sequence[ListenerFactory],
    shutdown: ShutdownRequest | None = None,
    *,
    freeze_restored: bool = False,
) -> None:
    """Run the server until a shutdown is requested; raises :class:`WharfError` on startup.
    ``freeze_restored``: open the broker with the garbage collector paused, then freeze what
    the open made (:func:`collector_paused`; for a process of its own: :func:`run`)."""
    loop = asyncio.get_running_loop()
    shutdown = shutdown or ShutdownRequest()
    shutdown.install(loop)
    data_dir = settings.data_dir.absolute()
    try:
        logger.info(
            "wharf starting",
            extra=log_fields(
                pid=os.getpid(),
                data_dir=data_dir,
                fsync=settings.broker.fsync,
                loop=type(loop).__module__.split(".")[0],
            ),
        )
        if data_dir.exists() and not data_dir.is_dir():
            raise StartupError(f"cannot use data directory {data_dir}: it is not a directory")
        async with contextlib.AsyncExitStack() as stack:
            member: ClusterMember | None = None
            if settings.cluster.database is not None:
                from wharf.server.cluster import ClusterMember

                member = await ClusterMember.join(settings)
                stack.push_async_callback(member.close)  # after the broker has closed
            node = member.node if member is not None else None
            try:
                with collector_paused() if freeze_restored else contextlib.nullcontext():
                    broker = await stack.enter_async_context(
                        Broker.open(data_dir, settings.broker, cluster=node)
                    )
            except DataDirInUseError as exc:
                raise StartupError(f"{exc}; stop it or choose another --data-dir") from None
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise StartupError(f"cannot use data directory {data_dir}: {reason}") from None
            if member is not None:
                member.attach(broker.stats)
            await _run_listeners(broker, settings, factories, shutdown, member)
        logger.info("broker closed")
    finally:
        shutdown.uninstall(loop)
    logger.info("wharf stopped")


async def _run_listeners(
    broker: Broker,
    settings: ServerSettings,
    factories: Sequence[ListenerFactory],
    shutdown: ShutdownRequest,
    member: ClusterMember | None,
) -> None:
    started: list[Listener] = []
    try:
        endpoints = await _start_listeners(broker, settings, factories, started)
        if member is not None:
            await member.announce(endpoints)
        logger.info(_ready_line(endpoints))
        await shutdown.requested.wait()
    finally:
        grace_s = settings.shutdown_timeout_ms / 1000
        await stop_listeners(started, grace_s, shutdown.forced)


GC_YOUNG_THRESHOLD = 50_000
"""Allocations between two collections of the youngest generation (Python's default: 700)."""


def tune_gc() -> None:
    """Move everything allocated so far (the imported modules, the settings) out of the
    collector's sight, and collect the youngest generation every :data:`GC_YOUNG_THRESHOLD`
    allocations instead of every 700.

    A broker allocates in bursts objects that live a while (a claim of thousands of queue rows,
    a batch of deliveries): with the defaults, each burst set off collections that walked the
    survivors again and again, and the older collections walked every imported module's
    objects as well. Measured on a three-node cluster consuming from one queue (docs/
    performance.md): the consuming node's CPU per message fell by about a third. Objects are
    still freed by reference counting as soon as they are unreachable; only reference cycles
    wait longer, and the frozen startup objects are never collected (they live as long as the
    process anyway)."""
    gc.freeze()
    _, middle, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, oldest)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while the broker opens, then move what the open
    allocated out of its sight (``gc.freeze``, as :func:`tune_gc` does for the imports).

    Restoring 50,000 queues allocates millions of objects that all live on: the collections
    they set off walked them again and again, and the first full collection after the open
    walked them all once more (about 0.45 s of a 3 s restart, docs/performance.md).
    Reference counting still frees what the open drops, and frozen objects are freed by it
    too once unreachable; only reference cycles among them would stay (a deleted queue
    breaks its own)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
        gc.freeze()
    finally:
        if was_enabled:
            gc.enable()


def run(settings: ServerSettings, factories: Sequence[ListenerFactory]) -> None:
    """Run :func:`serve` to completion on a fresh event loop (uvloop when available), with
    the garbage collector tuned for it (:func:`tune_gc`, :func:`collector_paused`)."""
    tune_gc()
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    main: Coroutine[Any, Any, None] = serve(settings, factories, freeze_restored=True)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main)
