"""The pytest plugin as a project uses it: inner test files run by ``pytester`` take the fixtures
and talk to the broker with pika, aio-pika, aiokafka and confluent-kafka; two tests do not see
each other's queues; a failed test's report shows the broker's log; a project that never asks
for a broker starts none.

The inner runs load the plugin with ``-p wharf.testing.pytest_plugin`` after ``-p no:wharf``,
which blocks the entry point should the installed distribution already register it (a plugin
module may be registered once).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import pytest

from wharf.testing.broker_process import BrokerProcess

ROOT = Path(__file__).resolve().parents[2]
PLUGIN = ("-p", "no:wharf", "-p", "wharf.testing.pytest_plugin")

CLIENTS = '''
import asyncio
import json
import time
import urllib.request

import aio_pika
import pika
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Consumer, Producer

SEEN = []


def test_pika_round_trip(wharf_broker):
    connection = pika.BlockingConnection(pika.URLParameters(wharf_broker.amqp_url))
    channel = connection.channel()
    channel.queue_declare("jobs")
    channel.basic_publish("", "jobs", b"from pika")
    _, _, body = channel.basic_get("jobs", auto_ack=True)
    connection.close()
    assert body == b"from pika"


async def test_aio_pika_round_trip(wharf_broker):
    connection = await aio_pika.connect(wharf_broker.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue("jobs")
        await channel.default_exchange.publish(aio_pika.Message(b"from aio-pika"), "jobs")
        message = await queue.get(timeout=10)
        await message.ack()
    assert message.body == b"from aio-pika"


async def test_aiokafka_round_trip(wharf_broker):
    topic = wharf_broker.topic("events")
    producer = AIOKafkaProducer(bootstrap_servers=wharf_broker.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"from aiokafka")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=wharf_broker.kafka_bootstrap,
        group_id=wharf_broker.group("readers"),
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        record = await asyncio.wait_for(consumer.getone(), 30)
    finally:
        await consumer.stop()
    assert (record.topic, record.value) == (topic, b"from aiokafka")


def test_confluent_kafka_round_trip(wharf_broker):
    topic = wharf_broker.topic("events")
    producer = Producer({"bootstrap.servers": wharf_broker.kafka_bootstrap})
    producer.produce(topic, b"from confluent-kafka")
    assert producer.flush(30) == 0
    consumer = Consumer({
        "bootstrap.servers": wharf_broker.kafka_bootstrap,
        "group.id": wharf_broker.group("readers"),
        "auto.offset.reset": "earliest",
    })
    consumer.subscribe([topic])
    deadline = time.monotonic() + 30
    record = None
    while record is None and time.monotonic() < deadline:
        record = consumer.poll(0.5)
    consumer.close()
    assert record is not None and record.error() is None
    assert record.value() == b"from confluent-kafka"


def test_first_of_two_leaves_a_queue_and_a_topic_name(wharf_broker):
    connection = pika.BlockingConnection(pika.URLParameters(wharf_broker.amqp_url))
    connection.channel().queue_declare("left-behind")
    connection.close()
    SEEN.append(wharf_broker)


def test_second_of_two_sees_none_of_it(wharf_broker):
    (first,) = SEEN
    assert wharf_broker.vhost != first.vhost
    assert wharf_broker.topic("events") != first.topic("events")
    connection = pika.BlockingConnection(pika.URLParameters(wharf_broker.amqp_url))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="NOT_FOUND"):
        connection.channel().queue_declare("left-behind", passive=True)
    connection.close()
    with urllib.request.urlopen(wharf_broker.http_url + "/api/vhosts") as answer:
        names = {vhost["name"] for vhost in json.load(answer)}
    assert wharf_broker.vhost in names and first.vhost not in names


def test_fresh_broker_is_another_and_empty(wharf_fresh_broker, wharf_broker):
    assert wharf_fresh_broker.amqp_port != wharf_broker.amqp_port
    assert wharf_fresh_broker.vhost == "/" and wharf_fresh_broker.topic("t") == "t"
    connection = pika.BlockingConnection(pika.URLParameters(wharf_fresh_broker.amqp_url))
    connection.channel().queue_declare("only-in-the-fresh-one")
    connection.close()
    with urllib.request.urlopen(wharf_fresh_broker.http_url + "/api/queues") as answer:
        assert [q["name"] for q in json.load(answer)] == ["only-in-the-fresh-one"]


def test_fails_after_a_refused_declare(wharf_broker):
    connection = pika.BlockingConnection(pika.URLParameters(wharf_broker.amqp_url))
    try:
        connection.channel().queue_declare("no-such-queue", passive=True)
    except pika.exceptions.ChannelClosedByBroker:
        pass
    connection.close()
    assert False, "this test fails on purpose"
'''

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
"""


@pytest.fixture
def starts(monkeypatch: pytest.MonkeyPatch) -> list[BrokerProcess]:
    """Every broker the inner (in-process) runs start."""
    started: list[BrokerProcess] = []
    original = BrokerProcess.start

    def start(self: BrokerProcess) -> None:
        started.append(self)
        original(self)

    monkeypatch.setattr(BrokerProcess, "start", start)
    return started


@pytest.fixture
def own_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary directory of the test's own for the plugin's session broker."""
    path = tmp_path / "tmp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def test_clients_isolation_fresh_broker_and_the_failure_log(
    pytester: pytest.Pytester, own_tempdir: Path, starts: list[BrokerProcess]
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_inner_plugin_clients=CLIENTS)  # names unique in this session
    result = pytester.runpytest(*PLUGIN, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=7, failed=1)
    output = result.stdout.str()
    failure = output[output.index("test_fails_after_a_refused_declare ___") :]
    assert "wharf broker log (call)" in failure
    assert "NOT_FOUND - no queue 'no-such-queue' in vhost 't" in failure
    assert "wharf broker log" not in output[: output.index("test_fails_after_a_refused_declare")]
    # one session broker and one fresh; the session's is gone, with its data
    assert len(starts) == 2
    assert list(own_tempdir.iterdir()) == []


DEFAULT_FIRST = """
import urllib.parse

import pika
import pytest

SEEN = []


def test_first_gets_the_untouched_default_vhost(wharf_broker):
    assert wharf_broker.vhost == "/"
    assert wharf_broker.topic("events").startswith("t1-")
    connection = pika.BlockingConnection(pika.URLParameters(wharf_broker.amqp_url))
    connection.channel().queue_declare("left-in-the-default")
    connection.close()
    SEEN.append(wharf_broker)


def test_second_gets_its_own_and_the_default_is_empty_again(wharf_broker):
    (first,) = SEEN
    assert wharf_broker.vhost not in ("/", first.vhost)
    assert wharf_broker.topic("events") != first.topic("events")
    # the first test's namespace was dropped: / is there again, empty, and guest may use it
    connection = pika.BlockingConnection(pika.URLParameters(first.amqp_url))
    with pytest.raises(pika.exceptions.ChannelClosedByBroker, match="NOT_FOUND"):
        connection.channel().queue_declare("left-in-the-default", passive=True)
    connection.close()
"""


def test_the_first_test_gets_the_default_vhost_and_leaves_it_empty(
    pytester: pytest.Pytester, own_tempdir: Path
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_inner_plugin_default=DEFAULT_FIRST)
    result = pytester.runpytest(*PLUGIN, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_a_broker_on_a_used_data_directory_gives_no_test_its_default_vhost(
    tmp_path: Path,
) -> None:
    first = BrokerProcess(tmp_path)
    first.start()
    try:
        assert first.namespace("a").vhost == "/"
    finally:
        first.stop()
    again = BrokerProcess(tmp_path)  # the same data directory, started again
    again.start()
    try:
        assert again.namespace("b").vhost != "/"
    finally:
        again.stop()


def test_a_project_that_asks_for_no_broker_starts_none(
    pytester: pytest.Pytester, starts: list[BrokerProcess]
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(test_inner_plugin_plain="def test_plain():\n    assert 1 + 1 == 2\n")
    result = pytester.runpytest(*PLUGIN, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert starts == []


def test_collecting_only_starts_no_broker(
    pytester: pytest.Pytester, starts: list[BrokerProcess]
) -> None:
    pytester.makeini(INI)
    pytester.makepyfile(
        test_inner_plugin_uses="def test_uses(wharf_broker):\n    assert wharf_broker\n"
    )
    result = pytester.runpytest(*PLUGIN, "-p", "no:cacheprovider", "--collect-only", "-q")
    result.stdout.fnmatch_lines(["test_inner_plugin_uses.py::test_uses"])
    assert starts == []


def test_loading_the_plugin_imports_nothing_of_the_broker() -> None:
    code = (
        "import sys, pytest\n"
        "before = set(sys.modules)\n"
        "import wharf.testing.pytest_plugin\n"
        "print(sorted(m for m in set(sys.modules) - before if m.startswith('wharf')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == (
        "['wharf', 'wharf.testing', 'wharf.testing.broker_process', "
        "'wharf.testing.pytest_plugin']"
    )


def test_the_distribution_registers_the_plugin() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["project"]["entry-points"]["pytest11"] == {
        "wharf": "wharf.testing.pytest_plugin"
    }
