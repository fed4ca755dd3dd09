"""The fault tests' TCP proxy (helpers/tcp_proxy.py): it forwards, holds everything while
black-holed (open connections hang, new ones are accepted but go nowhere), and delivers what it
held once restored."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from helpers.tcp_proxy import TcpProxy


class _Echo(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        while line := self.rfile.readline():
            self.wfile.write(line)


@pytest.fixture
def echo_port() -> Iterator[int]:
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo) as server:
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield int(server.server_address[1])
        server.shutdown()


def _connect(proxy: TcpProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=10)


def _silent(sock: socket.socket) -> bool:
    """True if nothing arrives on ``sock`` for a while (the black hole holds)."""
    sock.settimeout(0.5)
    try:
        sock.recv(100)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(10)
    return False


def test_the_proxy_forwards_holds_while_black_holed_and_delivers_once_restored(
    echo_port: int,
) -> None:
    with TcpProxy("127.0.0.1", echo_port) as proxy, _connect(proxy) as before:
        before.sendall(b"one\n")
        assert before.recv(100) == b"one\n"

        proxy.black_hole()
        before.sendall(b"two\n")
        with _connect(proxy) as during:  # accepted, but not carried onward
            during.sendall(b"three\n")
            assert _silent(before)
            assert _silent(during)

            proxy.restore()
            assert before.recv(100) == b"two\n"
            assert during.recv(100) == b"three\n"
