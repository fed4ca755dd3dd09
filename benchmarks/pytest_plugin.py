"""What the pytest plugin costs a test suite: broker start-up and per-test isolation.

* ``subprocess ready``: :class:`~wharf.testing.broker_process.BrokerProcess` from ``start()`` to
  the end of ``wait_ready()`` (the plugin's way: ``wharf serve`` in a child process);
* ``in-process ready``: the other way measured for comparison, in a fresh interpreter (so imports
  are cold, as in a new test session): import the serve path, then run the server on an event
  loop in a thread of its own until its ready line;
* ``plugin import``: what loading ``wharf.testing.pytest_plugin`` adds to every pytest run of a
  project with Wharf installed (in a fresh interpreter that has imported pytest already);
* ``pytest session``: the wall time of ``pytest`` running one test that takes ``wharf_broker``
  minus that of the same run with a test that does not (what a new session pays for the broker
  with next to nothing to collect, so the boot cannot hide behind collection);
* ``isolation``: one test's namespace, i.e. ``namespace()`` (create a vhost and grant it over
  HTTP) plus ``drop()`` (delete it), against a running broker.

Medians (and the 90th percentile for isolation) of several runs, the two ways interleaved; the
machine may be shared.

    .venv/bin/python benchmarks/pytest_plugin.py [runs]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from wharf.testing.broker_process import BrokerProcess

_IN_PROCESS = r"""
import asyncio, logging, sys, tempfile, threading, time
t0 = time.perf_counter()
from pathlib import Path
from wharf.cli.serve.command import listener_factories
from wharf.core.config import BrokerConfig, FsyncPolicy
from wharf.server.app import serve
from wharf.server.settings import ServerSettings
from wharf.server.shutdown import ShutdownRequest

class ThreadShutdown(ShutdownRequest):  # signal handlers belong to the main thread
    def install(self, loop): pass
    def uninstall(self, loop): pass

ready = threading.Event()
class OnReady(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("wharf ready:"):
            ready.set()
logging.getLogger("wharf").addHandler(OnReady())
logging.getLogger("wharf").setLevel(logging.INFO)
settings = ServerSettings(
    data_dir=Path(tempfile.mkdtemp()), host="127.0.0.1", kafka_port=0, amqp_port=0, http_port=0,
    broker=BrokerConfig(fsync=FsyncPolicy.NEVER),
)
shutdown = ThreadShutdown()
loop = asyncio.new_event_loop()
thread = threading.Thread(
    target=loop.run_until_complete, args=(serve(settings, listener_factories(), shutdown),)
)
thread.start()
ready.wait()
print(time.perf_counter() - t0)
loop.call_soon_threadsafe(shutdown.request, "done")
thread.join()
"""

_PLUGIN_IMPORT = r"""
import time, pytest
t0 = time.perf_counter()
import wharf.testing.pytest_plugin
print(time.perf_counter() - t0)
"""


def _child_seconds(code: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return float(out.stdout.split()[-1])


_USES = "def test_it(wharf_broker):\n    assert wharf_broker.amqp_url\n"
_PLAIN = "def test_it():\n    assert True\n"


def pytest_seconds(directory: Path, test: str) -> float:
    directory.mkdir()
    (directory / "test_it.py").write_text(test)
    argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:wharf",
            "-p", "wharf.testing.pytest_plugin", str(directory)]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True, timeout=120)
    return time.perf_counter() - start


def subprocess_ready(base: Path) -> float:
    process = BrokerProcess(base)
    start = time.perf_counter()
    process.start()
    try:
        process.wait_ready()
        return time.perf_counter() - start
    finally:
        process.stop()


def isolation(process: BrokerProcess, count: int) -> list[float]:
    times = []
    for i in range(count):
        start = time.perf_counter()
        broker = process.namespace(f"bench_{i}")
        process.drop(broker)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    with tempfile.TemporaryDirectory(prefix="wharf-bench-") as tmp:
        base = Path(tmp)
        sub, inproc, plugin, session = [], [], [], []
        for i in range(runs):  # interleaved, so that a busy spell of the machine hits both ways
            sub.append(subprocess_ready(base / f"s{i}"))
            inproc.append(_child_seconds(_IN_PROCESS))
            plugin.append(_child_seconds(_PLUGIN_IMPORT))
            with_broker = pytest_seconds(base / f"p{i}", _USES)
            session.append(with_broker - pytest_seconds(base / f"q{i}", _PLAIN))
        process = BrokerProcess(base / "iso")
        process.start()
        try:
            isolation(process, 20)  # warm: the admin connection, the first definitions saves
            iso = sorted(isolation(process, 200))
        finally:
            process.stop()
    print(f"subprocess ready   median {statistics.median(sub) * 1000:7.0f} ms  (runs: {runs})")
    print(f"in-process ready   median {statistics.median(inproc) * 1000:7.0f} ms  (runs: {runs})")
    print(f"plugin import      median {statistics.median(plugin) * 1000:7.1f} ms  (runs: {runs})")
    print(f"pytest session     median {statistics.median(session) * 1000:7.0f} ms  (runs: {runs})")
    p90 = iso[int(len(iso) * 0.9)]
    print(
        f"isolation per test median {statistics.median(iso) * 1000:7.2f} ms  "
        f"p90 {p90 * 1000:.2f} ms  (namespace + drop, {len(iso)} tests)"
    )


if __name__ == "__main__":
    main()
