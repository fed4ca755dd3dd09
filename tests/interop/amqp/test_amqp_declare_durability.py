"""Definitions survive SIGKILL: a ``wharf serve`` killed mid-burst of pika declares knows,
after a restart, every queue, exchange and binding it had answered declare-ok (bind-ok) for."""

from __future__ import annotations

import threading
import time

import pika
import pytest
from pika.exceptions import AMQPError

pytestmark = [pytest.mark.interop, pytest.mark.slow]


def declare_until_killed(port: int, answered: list[tuple[str, str]], stop: threading.Event) -> None:
    """Declare durable queues (and every tenth an exchange bound to it) one after another,
    noting each one the server answered, until the connection breaks."""
    try:
        connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
        channel = connection.channel()
        n = 0
        while not stop.is_set():
            channel.queue_declare(f"q-{n}", durable=True)
            answered.append(("queue", f"q-{n}"))
            if n % 10 == 0:
                channel.exchange_declare(f"e-{n}", "direct", durable=True)
                answered.append(("exchange", f"e-{n}"))
                channel.queue_bind(f"q-{n}", f"e-{n}", "k")
                answered.append(("binding", f"q-{n}"))
            n += 1
    except AMQPError:
        return  # the server was killed


def test_every_answered_declare_survives_kill_9(start_wharf) -> None:  # type: ignore[no-untyped-def]
    server = start_wharf()
    answered: list[tuple[str, str]] = []
    stop = threading.Event()
    declarer = threading.Thread(target=declare_until_killed, args=(server.amqp_port, answered,
                                                                    stop))  # fmt: skip
    declarer.start()
    deadline = time.monotonic() + 60
    while len(answered) < 300 and time.monotonic() < deadline and declarer.is_alive():
        time.sleep(0.01)
    assert len(answered) >= 300
    server.kill()  # SIGKILL while declares are in flight
    declarer.join(30)
    stop.set()
    assert not declarer.is_alive()

    server.restart()
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", server.amqp_port))
    channel = connection.channel()
    channel.confirm_delivery()
    missing: list[tuple[str, str]] = []
    for kind, name in answered:
        try:
            if kind == "queue":
                channel.queue_declare(name, passive=True)
            elif kind == "exchange":
                channel.exchange_declare(name, "direct", passive=True)
            else:  # the binding routes: a mandatory publish through it is not returned
                before = channel.queue_declare(name, passive=True).method.message_count
                channel.basic_publish(f"e-{name[2:]}", "k", b"probe", mandatory=True)
                after = channel.queue_declare(name, passive=True).method.message_count
                if after != before + 1:
                    missing.append((kind, name))
        except AMQPError:
            missing.append((kind, name))
            channel = connection.channel()
            channel.confirm_delivery()
    connection.close()
    assert not missing, f"{len(missing)} answered declares lost, e.g. {missing[:5]}"
