"""Raw-socket AMQP helpers for tests that must send what no client library would."""

from __future__ import annotations

import socket
import struct
import time

from pamqp import commands
from pamqp import frame as pamqp_frame

HEADER = b"AMQP\x00\x00\x09\x01"


def read_frames(sock: socket.socket, timeout: float = 10.0) -> tuple[list[object], bytes]:
    """Read until the server closes the socket, answering Connection.Close with Close-Ok.

    Returns the decoded frames and the raw bytes received."""
    sock.settimeout(timeout)
    raw = b""
    buf = b""
    frames: list[object] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        raw += chunk
        buf += chunk
        if raw.startswith(b"AMQP"):
            continue
        while len(buf) >= 7 and len(buf) >= 8 + struct.unpack(">I", buf[3:7])[0]:
            consumed, _channel, value = pamqp_frame.unmarshal(buf)
            buf = buf[consumed:]
            frames.append(value)
            if isinstance(value, commands.Connection.Close):
                try:
                    send_method(sock, 0, commands.Connection.CloseOk())
                except OSError:
                    pass
    return frames, raw


def send_method(sock: socket.socket, channel: int, method: object) -> None:
    sock.sendall(pamqp_frame.marshal(method, channel))


def handshake(port: int, *, heartbeat: int = 0) -> socket.socket:
    """Open a raw socket and complete Start/Tune/Open by hand."""
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(HEADER)
    read_until(sock, commands.Connection.Start)
    send_method(
        sock, 0, commands.Connection.StartOk(mechanism="PLAIN", response="\0guest\0guest")
    )
    read_until(sock, commands.Connection.Tune)
    tune_ok = commands.Connection.TuneOk(channel_max=10, frame_max=4096, heartbeat=heartbeat)
    send_method(sock, 0, tune_ok)
    send_method(sock, 0, commands.Connection.Open(virtual_host="/"))
    read_until(sock, commands.Connection.OpenOk)
    return sock




def read_until(sock: socket.socket, kind: type, timeout: float = 10.0) -> list[object]:
    """Read frames one by one (never past the wanted one) until a ``kind`` frame arrives."""
    sock.settimeout(timeout)
    frames: list[object] = []
    while True:
        head = _recv_exactly(sock, 7)
        size = struct.unpack(">I", head[3:7])[0]
        data = head + _recv_exactly(sock, size + 1)
        _, _, value = pamqp_frame.unmarshal(data)
        frames.append(value)
        if isinstance(value, kind):
            return frames


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"socket closed after {data!r}")
        data += chunk
    return data
