"""Queue logs opened lazily and closed when idle, seen through pika: with a small bound on
open queue logs the broker closes idle queues' logs as it goes, a graceful restart opens no
queue log until a client needs its messages, and every confirmed message is there in order,
with its delivery count, after a clean stop and after a kill -9."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pika
import pytest
from pika.adapters.blocking_connection import BlockingChannel

pytestmark = [pytest.mark.interop, pytest.mark.slow]

QUEUES = 12
PERSISTENT = pika.BasicProperties(delivery_mode=2)


def queue_logs_open(pid: int, data: Path) -> set[str]:
    """The queue directories that the broker holds a file of open."""
    queues = str((data / "queues" / "vhosts").resolve())
    names: set[str] = set()
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in fd_dir.iterdir():
        try:
            target = os.readlink(fd)
        except FileNotFoundError:
            continue  # closed meanwhile
        if target.startswith(queues + "/"):  # <vhost>/queues/<queue>/<log>/<file>
            names.add(target[len(queues) + 1 :].split("/")[2])
    return names


def channel(port: int | None) -> tuple[pika.BlockingConnection, BlockingChannel]:
    connection = pika.BlockingConnection(pika.ConnectionParameters("127.0.0.1", port))
    ch = connection.channel()
    ch.confirm_delivery()
    return connection, ch


def get_all(ch: BlockingChannel, queue: str) -> list[tuple[bytes, bool]]:
    """(body, redelivered) of every ready message, taken without acknowledgement."""
    got: list[tuple[bytes, bool]] = []
    while True:
        method, _props, body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            return got
        got.append((body, method.redelivered))


def consume_acked(ch: BlockingChannel, queue: str, count: int) -> list[bytes]:
    """The bodies of ``count`` messages consumed from ``queue``, each acknowledged."""
    consumed: list[bytes] = []
    for method, _props, body in ch.consume(queue, inactivity_timeout=5):
        assert method is not None, f"{queue} delivered {consumed} and then nothing"
        consumed.append(body)
        ch.basic_ack(method.delivery_tag)
        if len(consumed) == count:
            break
    ch.cancel()
    return consumed


def test_queues_open_their_logs_when_needed_and_keep_every_confirmed_message(
    start_wharf, tmp_path: Path  # noqa: ANN001
) -> None:
    data = tmp_path / "data"
    server = start_wharf(data_dir=data, env={"WHARF_OPEN_QUEUE_LOGS": "4"})
    connection, ch = channel(server.amqp_port)
    for q in range(QUEUES):
        ch.queue_declare(f"q{q}", durable=True)
        for i in range(3):
            ch.basic_publish("", f"q{q}", b"q%d-%d" % (q, i), PERSISTENT)
    # q0's first message delivered once and not acknowledged: back in the queue, redelivered
    method, _props, body = ch.basic_get("q0", auto_ack=False)
    assert method is not None and body == b"q0-0" and not method.redelivered
    connection.close()

    deadline = time.monotonic() + 10
    while len(open_now := queue_logs_open(server.pid, data)) > 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(open_now) <= 4, f"{len(open_now)} queues' logs open beyond the bound of 4"

    server.restart()  # graceful: the next start opens no queue log
    assert not (data / "queues" / "summaries.json").exists()  # read and deleted at start
    assert queue_logs_open(server.pid, data) == set()
    connection, ch = channel(server.amqp_port)
    counts = [ch.queue_declare(f"q{q}", durable=True, passive=True).method.message_count
              for q in range(QUEUES)]  # fmt: skip
    assert counts == [3] * QUEUES
    assert queue_logs_open(server.pid, data) == set()  # counts come from the summary
    assert get_all(ch, "q0") == [(b"q0-0", True), (b"q0-1", False), (b"q0-2", False)]
    ch.basic_qos(prefetch_count=1)
    assert consume_acked(ch, "q2", 3) == [b"q2-0", b"q2-1", b"q2-2"]
    ch.basic_publish("", "q1", b"q1-3", PERSISTENT)  # into a queue whose logs are closed
    connection.close()

    server.kill()  # a crash: no summaries, every queue's logs recovered at start
    server.restart()
    connection, ch = channel(server.amqp_port)
    assert get_all(ch, "q0") == []
    assert get_all(ch, "q1") == [(b"q1-%d" % i, False) for i in range(4)]
    assert get_all(ch, "q2") == []
    for q in range(3, QUEUES):
        assert get_all(ch, f"q{q}") == [(b"q%d-%d" % (q, i), False) for i in range(3)]
    connection.close()


def test_after_a_kill_9_queues_serve_clients_at_once_and_are_read_back_behind(
    start_wharf, tmp_path: Path  # noqa: ANN001
) -> None:
    """The start after a crash reads no queue before its listeners open; the queues the
    background reads last are used first, and each behaves as if read at start."""
    many = 300
    names = [f"w{q}" for q in range(many)]
    server = start_wharf(data_dir=tmp_path / "data")
    connection, ch = channel(server.amqp_port)
    for name in names:
        ch.queue_declare(name, durable=True)
        for i in range(2):
            ch.basic_publish("", name, b"%s-%d" % (name.encode(), i), PERSISTENT)
    connection.close()

    server.kill()
    server.restart()
    connection, ch = channel(server.amqp_port)
    last, before_last, third_last = names[-1], names[-2], names[-3]
    ch.basic_publish("", last, b"late", PERSISTENT)  # confirmed: after the two it held
    declared = ch.queue_declare(before_last, durable=True, passive=True)
    assert declared.method.message_count == 2
    assert consume_acked(ch, third_last, 2) == [b"%s-%d" % (third_last.encode(), i)
                                                for i in range(2)]  # fmt: skip
    assert get_all(ch, last) == [(b"%s-0" % last.encode(), False),
                                 (b"%s-1" % last.encode(), False), (b"late", False)]  # fmt: skip
    for name in names[:-3]:
        assert get_all(ch, name) == [(b"%s-%d" % (name.encode(), i), False) for i in range(2)]
    connection.close()
    deadline = time.monotonic() + 30
    while f"read back the logs of {many} queues left by a crash" not in server.log_text():
        assert time.monotonic() < deadline, "no log line of the queues read back"
        time.sleep(0.05)
