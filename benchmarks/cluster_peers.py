"""The peers the cluster benchmark compares with: NATS JetStream R3 and RabbitMQ on three nodes.

Both are Debian packages (``apt-get install nats-server rabbitmq-server``) and run on 127.0.0.1
only, from a directory of the caller's, as three processes on one machine:

- :class:`NatsCluster`: three ``nats-server -js`` with a cluster route to each other (distinct
  client and route ports, store directories and server names). Streams are created with
  ``num_replicas=3``. The client is nats-py (``pip install nats-py``): :func:`nats_publish`
  (``publish_async``, at most 1000 acks pending), :func:`nats_consume` (a durable pull consumer,
  ``fetch`` of 1000, AckAll on the last of each batch) and :func:`nats_latency`.
- :class:`RabbitCluster`: its own ``epmd`` on a free port, three ``rabbitmq-server`` nodes
  (``RABBITMQ_NODENAME`` bench1..3@localhost, distinct AMQP and distribution ports, mnesia and
  log directories, one shared Erlang cookie), then ``rabbitmqctl join_cluster`` of nodes 2 and 3
  with node 1. Measured with :mod:`amqp_load` on quorum queues (declared on node 1).

Every process is started in its own session and stopped by its process group id.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")


def free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def wait_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.2)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


def spawn(
    command: list[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(  # noqa: S603 - our own argv
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def end(process: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


# -- NATS JetStream -------------------------------------------------------------------------------


class NatsCluster:
    def __init__(self, base: Path) -> None:
        self.dir = base / "nats"
        self.client_ports = free_ports(3)
        self.route_ports = free_ports(3)
        self.processes: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        return ",".join(f"nats://127.0.0.1:{p}" for p in self.client_ports)

    def start(self) -> None:
        binary = shutil.which("nats-server")
        if binary is None:
            raise RuntimeError("no nats-server binary (apt-get install nats-server)")
        routes = ",".join(f"nats://127.0.0.1:{p}" for p in self.route_ports)
        for i, (client, route) in enumerate(zip(self.client_ports, self.route_ports, strict=True)):
            store = self.dir / f"n{i}"
            store.mkdir(parents=True)
            self.processes.append(
                spawn(
                    [
                        binary,
                        "-a",
                        "127.0.0.1",
                        "-p",
                        str(client),
                        "-n",
                        f"bench{i}",
                        "-js",
                        "-sd",
                        str(store),
                        "--cluster_name",
                        "bench",
                        "--cluster",
                        f"nats://127.0.0.1:{route}",
                        "--routes",
                        routes,
                    ],
                    self.dir / f"n{i}.log",
                )
            )
        for port in self.client_ports:
            wait_port(port, 30)

    def stop(self) -> None:
        for process in self.processes:
            end(process)
        self.processes = []


async def _jetstream(url: str, stream: str) -> tuple[Any, Any]:
    import nats
    from nats.js.api import StreamConfig

    nc = await nats.connect(url.split(","))
    js = nc.jetstream(publish_async_max_pending=1000)
    deadline = time.monotonic() + 30
    while True:  # the meta leader is elected a little after the servers listen
        try:
            await js.add_stream(StreamConfig(name=stream, subjects=[stream], num_replicas=3))
            return nc, js
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def nats_publish(url: str, stream: str, size: int, seconds: float) -> dict[str, float]:
    async def run() -> dict[str, float]:
        nc, js = await _jetstream(url, stream)
        payload = b"x" * size
        acked = 0
        last = 0.0

        def done(future: asyncio.Future[Any]) -> None:
            nonlocal acked, last
            if not future.cancelled() and future.exception() is None:
                acked += 1
                last = time.perf_counter()

        start = time.perf_counter()
        while time.perf_counter() < start + seconds:
            future = await js.publish_async(stream, payload)
            future.add_done_callback(done)
        await asyncio.wait_for(js.publish_async_completed(), 60)
        await nc.close()
        return {"msgs_per_s": acked / max(last - start, 1e-9), "acked": acked}

    return asyncio.run(run())


def nats_consume(url: str, stream: str, count: int, timeout_s: float = 120.0) -> dict[str, float]:
    async def run() -> dict[str, float]:
        import nats
        from nats.js.api import AckPolicy, ConsumerConfig

        nc = await nats.connect(url.split(","))
        js = nc.jetstream()
        sub = await js.pull_subscribe(
            stream, "bench", config=ConsumerConfig(ack_policy=AckPolicy.ALL, max_ack_pending=-1)
        )
        received = 0
        first = last = 0.0
        deadline = time.monotonic() + timeout_s
        while received < count and time.monotonic() < deadline:
            try:
                batch = await sub.fetch(1000, timeout=1)
            except TimeoutError:
                continue
            if received == 0:
                first = time.perf_counter()
            received += len(batch)
            last = time.perf_counter()
            await batch[-1].ack()
        await nc.close()
        return {"msgs_per_s": received / max(last - first, 1e-9), "received": received}

    return asyncio.run(run())


def nats_latency(
    url: str, stream: str, size: int, seconds: float, rate: float = 1000.0
) -> dict[str, float]:
    async def run() -> dict[str, float]:
        nc, js = await _jetstream(url, stream)
        samples: list[tuple[float, float]] = []
        total = int(rate * seconds)
        arrived = asyncio.Event()

        async def on_message(message: Any) -> None:
            now = time.time()
            (sent_at,) = struct.unpack(">d", message.data[:8])
            samples.append((sent_at, now - sent_at))
            if len(samples) >= total:
                arrived.set()

        await js.subscribe(stream, cb=on_message, ordered_consumer=True)
        padding = b"\0" * max(0, size - 8)
        start = time.perf_counter()
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await js.publish_async(stream, struct.pack(">d", time.time()) + padding)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(arrived.wait(), 30)
        await nc.close()
        warm = samples[0][0] + 1.0 if samples else 0.0
        kept = sorted(lat for sent_at, lat in samples if sent_at >= warm)
        if not kept:
            return {"p50_ms": float("nan"), "p99_ms": float("nan"), "samples": 0}
        return {
            "p50_ms": kept[len(kept) // 2] * 1000,
            "p99_ms": kept[min(len(kept) - 1, int(0.99 * len(kept)))] * 1000,
            "samples": len(kept),
            "lost": total - len(samples),
        }

    return asyncio.run(run())


# -- RabbitMQ -------------------------------------------------------------------------------------


class RabbitCluster:
    """``bin_dir`` holds the ``rabbitmq-server`` and ``rabbitmqctl`` scripts (Debian's real ones
    are in /usr/lib/rabbitmq/bin; those in /usr/sbin switch to the rabbitmq user)."""

    def __init__(self, base: Path, nodes: int = 3, bin_dir: Path = RABBIT_BIN) -> None:
        self.bin = bin_dir
        self.dir = base / "rabbitmq"
        self.count = nodes
        self.amqp_ports = free_ports(nodes)
        self.dist_ports = free_ports(nodes)
        self.epmd_port = free_ports(1)[0]
        self.epmd: subprocess.Popen[bytes] | None = None
        self.processes: list[subprocess.Popen[bytes]] = []
        home = self.dir / "home"
        home.mkdir(parents=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(f"WHARFBENCH{os.getpid()}")
        cookie.chmod(0o400)
        (self.dir / "enabled_plugins").write_text("[].\n")
        loopback = "-kernel inet_dist_use_interface {127,0,0,1}"
        self.env = {
            **os.environ,
            "HOME": str(home),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "RABBITMQ_CONF_ENV_FILE": "/dev/null",
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.dir / "enabled_plugins"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": loopback,
            "RABBITMQ_CTL_ERL_ARGS": loopback,
        }

    def node(self, i: int) -> str:
        return f"bench{i + 1}@localhost"

    def ctl(self, i: int, *args: str) -> None:
        done = subprocess.run(  # noqa: S603 - our own argv
            [str(self.bin / "rabbitmqctl"), "-n", self.node(i), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} on {self.node(i)}: {done.stderr}")

    def start(self) -> None:
        if not (self.bin / "rabbitmq-server").exists():
            raise RuntimeError(f"no rabbitmq-server in {self.bin} (Debian: rabbitmq-server)")
        self.epmd = spawn(
            ["epmd", "-address", "127.0.0.1", "-port", str(self.epmd_port)], self.dir / "epmd.log"
        )
        for i in range(self.count):
            node_dir = self.dir / f"n{i + 1}"
            (node_dir / "mnesia").mkdir(parents=True)
            (node_dir / "log").mkdir()
            (node_dir / "rabbitmq.conf").write_text(
                f"listeners.tcp.1 = 127.0.0.1:{self.amqp_ports[i]}\n"
                "loopback_users.guest = true\nlog.console = false\nlog.file.level = warning\n"
            )
            env = {
                **self.env,
                "RABBITMQ_NODENAME": self.node(i),
                "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
                "RABBITMQ_NODE_PORT": str(self.amqp_ports[i]),
                "RABBITMQ_DIST_PORT": str(self.dist_ports[i]),
                "RABBITMQ_CONFIG_FILE": str(node_dir / "rabbitmq.conf"),
                "RABBITMQ_MNESIA_BASE": str(node_dir / "mnesia"),
                "RABBITMQ_LOG_BASE": str(node_dir / "log"),
            }
            self.processes.append(
                spawn([str(self.bin / "rabbitmq-server")], node_dir / "out.log", env)
            )
        for i, port in enumerate(self.amqp_ports):
            wait_port(port, 120)
            self.ctl(i, "await_startup")
        for i in range(1, self.count):
            self.ctl(i, "stop_app")
            self.ctl(i, "join_cluster", self.node(0))
            self.ctl(i, "start_app")
        for i, port in enumerate(self.amqp_ports):
            wait_port(port, 120)
            self.ctl(i, "await_startup")

    def stop(self) -> None:
        for process in self.processes:
            end(process, 30)
        self.processes = []
        if self.epmd is not None:
            end(self.epmd)
            self.epmd = None


@contextlib.contextmanager
def running(peer: NatsCluster | RabbitCluster) -> Iterator[None]:
    try:
        peer.start()
        yield
    finally:
        peer.stop()
