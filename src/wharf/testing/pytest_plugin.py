"""Wharf's pytest plugin: a real broker for the tests of projects that talk AMQP or Kafka.

``pip install wharf`` registers this module through the ``pytest11`` entry point. Fixtures:

- ``wharf_broker``: a :class:`~wharf.testing.broker_process.WharfBroker` of the session's
  broker, with a virtual host and a Kafka topic prefix of the test's own (``.amqp_url``,
  ``.kafka_bootstrap``, ``.topic(name)``, ``.group(name)``, ``.http_url``); the virtual host is
  deleted after the test (the session's first test gets the new broker's unused default ``/``,
  emptied before the next test's namespace is made).
- ``wharf_fresh_broker``: a broker started for this test alone (its default virtual host ``/``
  and no prefix), stopped after it.
- ``wharf_session_broker``: the session's :class:`~wharf.testing.broker_process.BrokerProcess`
  itself (``.ports``, ``.log_path``).

How it works: the session's broker is a ``wharf serve`` subprocess on free loopback ports
(docs/testing.md says why a subprocess and what it costs). It is launched when collection meets
the first test that uses one of these fixtures, and boots while collection carries on; the first
test to use it waits for its ready line. A project that never uses the fixtures, like a run
with ``--collect-only``, starts nothing and imports nothing of the broker. Each fixture notes
where the broker's log ended when the test began; the report of a failed test gets the lines
logged since then as a section, "wharf broker log".
"""

from __future__ import annotations

import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from wharf.testing.broker_process import BrokerProcess, WharfBroker

__all__ = ["wharf_broker", "wharf_fresh_broker", "wharf_session_broker"]

_USES_SESSION = frozenset({"wharf_broker", "wharf_session_broker"})
_SESSION = pytest.StashKey[BrokerProcess]()
_LOG_MARKS = pytest.StashKey[list[tuple[BrokerProcess, int]]]()


def _session_process(config: pytest.Config) -> BrokerProcess:
    """The session's broker, launched (not awaited) on the first call."""
    process = config.stash.get(_SESSION, None)
    if process is None:
        process = BrokerProcess(Path(tempfile.mkdtemp(prefix="wharf-pytest-")), remove_on_stop=True)
        process.start()
        config.stash[_SESSION] = process
    return process


def pytest_itemcollected(item: pytest.Item) -> None:
    if item.config.option.collectonly:
        return
    if _USES_SESSION.intersection(getattr(item, "fixturenames", ())):
        _session_process(item.config)


def pytest_unconfigure(config: pytest.Config) -> None:
    process = config.stash.get(_SESSION, None)
    if process is not None:
        process.stop()


def _mark_log(request: pytest.FixtureRequest, process: BrokerProcess) -> None:
    """Remember where ``process``'s log ends now, for the report should the test fail."""
    marks = request.node.stash.setdefault(_LOG_MARKS, [])
    marks.append((process, process.log_size()))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        for process, offset in item.stash.get(_LOG_MARKS, []):
            lines = process.log_since(offset)
            if lines:
                report.sections.append((f"wharf broker log ({report.when})", lines))
    return report


@pytest.fixture(scope="session")
def wharf_session_broker(pytestconfig: pytest.Config) -> BrokerProcess:
    """The session's broker, ready."""
    process = _session_process(pytestconfig)
    process.wait_ready()
    return process


@pytest.fixture
def wharf_broker(
    wharf_session_broker: BrokerProcess, request: pytest.FixtureRequest
) -> Iterator[WharfBroker]:
    """The session's broker seen through a virtual host and topic prefix of this test's own."""
    _mark_log(request, wharf_session_broker)
    broker = wharf_session_broker.namespace(request.node.name)
    yield broker
    wharf_session_broker.drop(broker)


@pytest.fixture
def wharf_fresh_broker(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[WharfBroker]:
    """A broker of this test's own, empty, stopped after the test."""
    process = BrokerProcess(tmp_path_factory.mktemp("wharf-fresh"))
    process.start()
    _mark_log(request, process)
    try:
        yield process.whole()
    finally:
        process.stop()
