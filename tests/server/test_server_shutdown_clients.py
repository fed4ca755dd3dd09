"""Graceful shutdown of a real ``wharf serve`` while clients are connected."""

from __future__ import annotations

import socket

import pika
import pytest

from helpers.broker_process import WharfProcess


def _read_until_closed(sock: socket.socket) -> None:
    """Return once the server has closed the connection (FIN or RST); a timeout raises."""
    try:
        while sock.recv(65536):
            pass
    except ConnectionResetError:
        pass


def test_sigterm_with_idle_connections_on_every_listener_exits_0(
    start_wharf,  # type: ignore[no-untyped-def]
) -> None:
    server: WharfProcess = start_wharf(env={"WHARF_SHUTDOWN_TIMEOUT_MS": "3000"})
    assert server.endpoints
    sockets = [
        socket.create_connection((host, port), timeout=60)
        for host, port in server.endpoints.values()
    ]
    try:
        server.terminate()  # asserts exit code 0
        for sock in sockets:
            _read_until_closed(sock)
    finally:
        for sock in sockets:
            sock.close()


def test_messages_confirmed_before_sigterm_survive_the_restart(
    start_wharf,  # type: ignore[no-untyped-def]
) -> None:
    # The blocked client cannot answer the server's Close; don't wait the default 15 s for it.
    wharf_server: WharfProcess = start_wharf(env={"WHARF_SHUTDOWN_TIMEOUT_MS": "1000"})
    params = pika.ConnectionParameters("127.0.0.1", wharf_server.amqp_port)
    connection = pika.BlockingConnection(params)
    channel = connection.channel()
    channel.queue_declare("survivors", durable=True)
    channel.confirm_delivery()
    for n in range(20):
        channel.basic_publish(
            "", "survivors", f"m{n}".encode(), pika.BasicProperties(delivery_mode=2)
        )
    wharf_server.terminate()  # the client is still connected: the server closes it
    with pytest.raises(pika.exceptions.ConnectionClosedByBroker) as closed:
        connection.process_data_events(0)
    assert closed.value.reply_code == 320  # CONNECTION_FORCED
    wharf_server.restart()
    params = pika.ConnectionParameters("127.0.0.1", wharf_server.amqp_port)
    with pika.BlockingConnection(params) as again:
        channel = again.channel()
        bodies = []
        while (got := channel.basic_get("survivors", auto_ack=True))[0] is not None:
            bodies.append(got[2])
    assert bodies == [f"m{n}".encode() for n in range(20)]
