"""Disk full through AMQP against a real ``wharf serve``: a persistent message published with
confirms to a durable queue that cannot be written is nacked (not acked, not left waiting), the
broker stays up, and publishes are confirmed again once there is room.

Two ways to fill the disk: a file-size limit (RLIMIT_FSIZE, set on the running server with
prlimit: writes past it fail with EFBIG), and a private small tmpfs holding the data directory
(unshare, where user and mount namespaces are available: ENOSPC). The broker's disk alarm is
turned off for the tmpfs (``WHARF_DISK_FREE_LIMIT_BYTES=0``), or it would block the publisher
before its write failed.
"""

from __future__ import annotations

import resource
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
import pika
import pytest
from pika.exceptions import NackError

from helpers.broker_process import WharfProcess

pytestmark = [pytest.mark.interop]

QUEUE = "disk-full-q"
PERSISTENT = pika.BasicProperties(delivery_mode=2)


def publish(channel: pika.adapters.blocking_connection.BlockingChannel, n: int, size: int) -> bool:
    """Publish message ``n`` persistently; True when acked, False when nacked."""
    body = str(n).encode().ljust(size, b".")
    try:
        channel.basic_publish("", QUEUE, body, PERSISTENT)
    except NackError:
        return False
    return True


def connect(server: WharfProcess) -> pika.BlockingConnection:
    assert server.amqp_port is not None
    return pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", server.amqp_port))


def nack_then_recover(
    server: WharfProcess, fill: Callable[[], None], make_room: Callable[[], None], size: int
) -> None:
    connection = connect(server)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.queue_declare(QUEUE, durable=True)
        acked = [n for n in range(3) if publish(channel, n, size)]
        assert acked == [0, 1, 2]
        fill()
        nacked = None
        for n in range(3, 300):
            if not publish(channel, n, size):
                nacked = n
                break
            acked.append(n)
        assert nacked is not None, "the broker kept confirming with the disk full"
        # Still full: the next ones are nacked too, however much waits to be written.
        for n in range(nacked + 1, nacked + 4):
            assert not publish(channel, n, size), n
        # The broker is up and serves other clients meanwhile.
        assert httpx.get(f"{server.http_url}/healthz", timeout=30).status_code == 200
        other = connect(server)
        try:
            other.channel().queue_declare(QUEUE, durable=True, passive=True)
        finally:
            other.close()
        make_room()
        last = nacked + 4
        assert publish(channel, last, size), "not confirmed once there was room again"
        acked.append(last)
        stored: list[int] = []
        while True:
            method, _, body = channel.basic_get(QUEUE, auto_ack=True)
            if method is None:
                break
            stored.append(int(body.rstrip(b".")))
    finally:
        connection.close()
    # Every confirmed message is there, in publish order (a nacked one may be there too: a
    # nack promises nothing either way).
    assert [n for n in stored if n in acked] == acked
    assert stored == sorted(stored)


def data_file_sizes(root: Path) -> int:
    return max(p.stat().st_size for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("size", [8 << 10, 200 << 10])
def test_persistent_publish_is_nacked_at_the_file_size_limit(
    start_wharf: Callable[..., WharfProcess], size: int
) -> None:
    server = start_wharf()
    unlimited = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)

    def fill() -> None:
        # Room for a little more than one message beyond the largest file written so far.
        limit = data_file_sizes(server.data_dir) + size + size // 2
        resource.prlimit(server.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))

    def make_room() -> None:
        resource.prlimit(server.pid, resource.RLIMIT_FSIZE, unlimited)

    nack_then_recover(server, fill, make_room, size)


class TmpfsWharfProcess(WharfProcess):
    """``wharf serve`` in a private mount namespace, its data directory on a small tmpfs."""

    def __init__(self, mount: Path, size_bytes: int, *, log_dir: Path) -> None:
        super().__init__(
            mount / "data", log_dir=log_dir, env={"WHARF_DISK_FREE_LIMIT_BYTES": "0"}
        )
        self.mount = mount
        self.size_bytes = size_bytes

    def command(self, port_args: Sequence[str] | None = None) -> list[str]:
        unshare = shutil.which("unshare")
        assert unshare is not None
        script = 'mount -t tmpfs -o size="$1" tmpfs "$2" && shift 2 && exec "$@"'
        return [unshare, "--mount", "--map-root-user", "sh", "-c", script, "sh",
                str(self.size_bytes), str(self.mount), *super().command(port_args)]  # fmt: skip

    @property
    def inside(self) -> Path:
        """The tmpfs as this process sees it (through the server's root directory)."""
        return Path(f"/proc/{self.pid}/root") / str(self.mount).lstrip("/")


@pytest.mark.parametrize("size", [8 << 10, 200 << 10])
def test_persistent_publish_is_nacked_on_a_full_filesystem(tmp_path: Path, size: int) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare(1) to mount a private tmpfs")
    mount = tmp_path / "small"
    mount.mkdir()
    server = TmpfsWharfProcess(mount, 8 << 20, log_dir=tmp_path / "logs")
    try:
        try:
            server.start()
        except AssertionError as exc:
            if "mount:" in str(exc) or "unshare:" in str(exc):
                pytest.skip(f"cannot mount a private tmpfs here: {exc}")
            raise
        filler = server.inside / "filler"

        def fill() -> None:
            # Take all but a little more than one message of the free space.
            with filler.open("wb", buffering=0) as f:
                chunk = b"\0" * (64 << 10)
                try:
                    while f.write(chunk):
                        pass
                except OSError:
                    pass  # ENOSPC: the tmpfs is full
            with filler.open("r+b") as f:
                f.truncate(max(0, filler.stat().st_size - size - size // 2))

        def make_room() -> None:
            filler.unlink()

        nack_then_recover(server, fill, make_room, size)
    finally:
        problem = server.cleanup()
    assert problem is None, problem
