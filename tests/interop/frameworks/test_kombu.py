"""Kombu on its own (py-amqp transport), as a user who writes a worker without Celery: a durable
topic exchange and queues kombu declares, JSON publishes confirmed by the broker, a
``ConsumerMixin`` worker that acks, requeues and rejects to a dead-letter queue, ``SimpleQueue``'s
non-blocking get, and a worker killed with -9 mid-task whose message the next worker gets again,
flagged redelivered.

``tests/interop/amqp/test_clients.py`` has kombu's simplest round trip already (a direct
exchange, ``Consumer`` with ``drain_events``, ``SimpleQueue.put`` and a blocking ``get``); these
tests do not repeat it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from amqp.exceptions import MessageNacked
from kombu import Connection, Consumer, Exchange, Message, Queue
from kombu.mixins import ConsumerMixin
from kombu.simple import SimpleQueue
from worker_process import BOUND_S, WorkerProcess

pytestmark = [pytest.mark.interop]

# Publisher confirms on every channel of the connection: publish() returns once the broker
# acknowledged the message and raises MessageNacked when it refused it.
CONFIRMED = {"confirm_publish": True}

# The child's worker: prefetch 1, the ack after the work. It records each delivery it starts
# (``started-<n>``: the tag and the redelivered flag), sleeps through its first one (killed
# there), and marks each finished job with ``done-<tag>``.
WORKER = """
import json, sys, time
from pathlib import Path
from kombu import Connection, Exchange, Queue
url, state = sys.argv[1], Path(sys.argv[2])
jobs = Queue("jobs", Exchange("jobs", type="direct", durable=True), "jobs", durable=True)

def work(body, message):
    n = len(list(state.glob("started-*"))) + 1
    started = [body["tag"], message.delivery_info["redelivered"]]
    (state / f"started-{n}").write_text(json.dumps(started))
    if n == 1:
        time.sleep(3600)  # killed here
    message.ack()
    (state / f"done-{body['tag']}").write_text("")

with Connection(url) as conn:
    with conn.Consumer(jobs, callbacks=[work], accept=["json"], prefetch_count=1):
        while True:
            conn.drain_events()
"""


def _wait(what: str, condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + BOUND_S
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {BOUND_S} s"
        time.sleep(0.05)


def _ready(conn: Connection, queue: Queue) -> int:
    """The queue's ready messages, from a passive Queue.Declare."""
    return int(queue.bind(conn.default_channel).queue_declare(passive=True).message_count)


@pytest.fixture
def conn(wharf_broker: Any) -> Iterator[Connection]:
    with Connection(wharf_broker.amqp_url, transport_options=CONFIRMED) as connection:
        yield connection


class OrderWorker(ConsumerMixin):
    """Acks an order, requeues one marked ``retry`` the first time, rejects one marked ``bad``.

    ``get_consumers`` gets kombu's ``Consumer`` with the worker's channel bound already.
    """

    def __init__(self, connection: Connection, queue: Queue) -> None:
        self.connection = connection
        self.queue = queue
        self.seen: list[tuple[int, bool]] = []  # (order id, redelivered)
        self.acked: list[int] = []

    def get_consumers(self, consumer: Callable[..., Consumer], channel: Any) -> list[Consumer]:
        return [
            consumer([self.queue], callbacks=[self.on_order], accept=["json"], prefetch_count=1)
        ]

    def on_order(self, body: dict[str, Any], message: Message) -> None:
        redelivered = bool(message.delivery_info["redelivered"])
        self.seen.append((body["id"], redelivered))
        if body.get("retry") and not redelivered:
            message.requeue()
        elif body.get("bad"):
            message.reject()  # requeue=False: to the queue's dead-letter exchange
        else:
            self.acked.append(body["id"])
            message.ack()


def test_a_mixin_worker_acks_requeues_and_rejects_confirmed_json_orders(
    wharf_broker: Any, conn: Connection
) -> None:
    shop = Exchange("shop", type="topic", durable=True)
    dead = Exchange("shop.dead", type="fanout", durable=True)
    parked = Queue("orders.parked", dead, durable=True)
    orders = Queue(
        "orders", shop, routing_key="order.*", durable=True,
        queue_arguments={"x-dead-letter-exchange": "shop.dead"},
    )  # fmt: skip
    producer = conn.Producer(serializer="json")
    published = [
        ("order.created", {"id": 1}),
        ("order.paid", {"id": 2, "retry": True}),
        ("invoice.sent", {"id": 9}),  # matches no binding: confirmed, and dropped
        ("order.created", {"id": 3, "bad": True}),
        ("order.shipped", {"id": 4}),
    ]
    for key, body in published:
        producer.publish(
            body, exchange=shop, routing_key=key, declare=[orders, parked], retry=False
        )
    assert _ready(conn, orders) == 4  # every confirmed order is in its queue

    worker = OrderWorker(conn, orders)
    thread = threading.Thread(target=worker.run, name="kombu-order-worker", daemon=True)
    thread.start()
    try:
        _wait("order 4 acked", lambda: 4 in worker.acked)
    finally:
        worker.should_stop = True  # the mixin sees it within its one-second drain timeout
        thread.join(BOUND_S)
    assert not thread.is_alive(), "the ConsumerMixin worker did not stop"
    # the requeued order comes back at its place, before the later ones, flagged redelivered
    assert worker.seen == [(1, False), (2, False), (2, True), (3, False), (4, False)]
    assert worker.acked == [1, 2, 4]
    assert _ready(conn, orders) == 0

    rejected: Message | None = None

    def dead_lettered() -> bool:
        nonlocal rejected
        rejected = parked.bind(conn.default_channel).get(accept=["json"])
        return rejected is not None

    _wait("rejected order in orders.parked", dead_lettered)
    assert rejected is not None
    assert rejected.payload == {"id": 3, "bad": True}
    death = rejected.headers["x-death"][0]
    assert (death["reason"], death["queue"], death["exchange"]) == ("rejected", "orders", "shop")
    assert death["routing-keys"] == ["order.created"]
    rejected.ack()
    assert _ready(conn, parked) == 0


def test_confirms_report_a_message_the_broker_refused(conn: Connection) -> None:
    # A full queue that refuses new messages: its broker nacks them, which only a publisher
    # with confirms learns of.
    tiny = Queue("tiny", Exchange("tiny", type="direct"), "tiny", max_length=1,
                 queue_arguments={"x-overflow": "reject-publish"})  # fmt: skip
    producer = conn.Producer(serializer="json")
    producer.publish({"n": 1}, exchange=tiny.exchange, routing_key="tiny", declare=[tiny])
    with pytest.raises(MessageNacked):
        producer.publish({"n": 2}, exchange=tiny.exchange, routing_key="tiny", retry=False)
    assert _ready(conn, tiny) == 1
    # the channel goes on after a nack
    assert tiny.bind(conn.default_channel).get(no_ack=True).payload == {"n": 1}


def test_simple_queue_counts_and_gets_without_blocking(conn: Connection) -> None:
    queue: SimpleQueue = conn.SimpleQueue("basket", serializer="json")
    try:
        with pytest.raises(SimpleQueue.Empty):
            queue.get_nowait()  # Basic.Get on an empty queue: Get-Empty
        for i in range(3):
            queue.put({"n": i})
        assert queue.qsize() == 3
        first = queue.get_nowait()
        assert first.payload == {"n": 0}
        first.requeue()
        assert queue.qsize() == 3
        again = queue.get_nowait()
        assert (again.payload, again.delivery_info["redelivered"]) == ({"n": 0}, True)
        again.ack()
        rest = [queue.get(block=True, timeout=BOUND_S) for _ in range(2)]
        assert [m.payload for m in rest] == [{"n": 1}, {"n": 2}]
        for message in rest:
            message.ack()
        sent = time.monotonic()
        with pytest.raises(SimpleQueue.Empty):
            queue.get(block=True, timeout=0.5)
        assert time.monotonic() - sent >= 0.5
        assert queue.qsize() == 0
    finally:
        queue.close()


def _queue_state(wharf_broker: Any, name: str) -> dict[str, Any]:
    """The queue as the broker's HTTP API shows it (ready and unacked counts, consumers)."""
    url = f"{wharf_broker.http_url}/api/queues/{name}"
    answer = httpx.get(url, params={"vhost": wharf_broker.vhost}, timeout=BOUND_S)
    answer.raise_for_status()
    state: dict[str, Any] = answer.json()
    return state


def test_a_worker_killed_mid_task_leaves_the_message_to_the_next(
    wharf_broker: Any, conn: Connection, tmp_path: Path
) -> None:
    jobs = Queue("jobs", Exchange("jobs", type="direct", durable=True), "jobs", durable=True)
    producer = conn.Producer(serializer="json")
    for tag in ("job-1", "job-2"):
        producer.publish({"tag": tag}, exchange=jobs.exchange, routing_key="jobs", declare=[jobs])

    first = WorkerProcess(WORKER, tmp_path, wharf_broker.amqp_url)
    first.start()
    try:
        first.wait_for("started-1")
        # prefetch 1: the busy worker holds job-1 only, job-2 waits in the queue
        held = _queue_state(wharf_broker, "jobs")
        assert (held["messages"], held["unacked"]) == (1, 1), held
        first.kill()
    finally:
        first.stop()
    _wait("job-1 back in the queue after the kill", lambda: _ready(conn, jobs) == 2)

    second = WorkerProcess(WORKER, tmp_path, wharf_broker.amqp_url)
    second.start()
    try:
        second.wait_for("done-job-1")
        second.wait_for("done-job-2")
    finally:
        second.stop()
    # once the broker has dropped the killed worker's connection, an unacked message would be
    # back in the queue: there is none
    _wait(
        "the second worker's consumer gone",
        lambda: _queue_state(wharf_broker, "jobs")["consumers"] == 0,
    )
    end = _queue_state(wharf_broker, "jobs")
    assert (end["messages"], end["unacked"]) == (0, 0), end
    assert _ready(conn, jobs) == 0

    started = [json.loads((tmp_path / f"started-{n}").read_text()) for n in range(1, 4)]
    assert started == [["job-1", False], ["job-1", True], ["job-2", False]]
    assert not (tmp_path / "started-4").exists()
