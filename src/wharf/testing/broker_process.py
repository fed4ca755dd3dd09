"""A ``wharf serve`` subprocess for other projects' test suites, and the per-test namespaces
carved out of it (the pytest plugin's engine, :mod:`wharf.testing.pytest_plugin`).

How it works: :meth:`BrokerProcess.start` launches ``python -m wharf.cli.main serve`` on
127.0.0.1 with port 0 for each listener, a data directory of its own and its log going to a
file (never a pipe, which could fill up and block the broker), and returns at once;
:meth:`BrokerProcess.wait_ready` polls that file for the ``wharf ready:`` line and reads the
bound ports from it. Starting and waiting are apart so that the plugin can launch the broker as
soon as collection meets a test that needs it and let it boot while collection goes on.

:meth:`BrokerProcess.namespace` gives a test its own AMQP virtual host, created and granted to
``guest`` through the broker's HTTP API over one kept-alive connection, and a Kafka topic
prefix; :meth:`BrokerProcess.drop` deletes the virtual host with its queues and exchanges. The
first namespace of a broker started on a new data directory is its default virtual host ``/``,
untouched until then, so the session's first test makes no HTTP request before it runs (the
HTTP API loads at its first connection, some 0.1 s: docs/testing.md); dropping it empties ``/``
by deleting it and creating it again, granted to ``guest`` as a new broker has it, when the
next namespace is made (which talks HTTP anyway), so that the first test's teardown waits for
nothing either.
Kafka topics are not deleted: the prefix keeps them apart. Log offsets (:meth:`log_size`,
:meth:`log_since`) let the plugin show the lines a failed test caused. :meth:`stop` kills the
broker: its data is for one session or test only.

This module imports nothing of the broker itself: the test process stays as light as the test
suite using it. Run as ``python -m wharf.testing.broker_process [serve flags]`` it is the child:
the ``wharf serve`` command alone, without the rest of the CLI (whose imports the ready line
would otherwise wait for).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import site
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import wharf

if TYPE_CHECKING:
    from http.client import HTTPConnection

__all__ = ["BrokerProcess", "BrokerStartError", "WharfBroker"]

HOST = "127.0.0.1"
READY_TIMEOUT_S = 60.0
_POLL_S = 0.005
_READY = re.compile(r"wharf ready:(?P<endpoints>.*)$", re.MULTILINE)
_ENDPOINT = re.compile(r"(\w+)=[^\s]+:(\d+)")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# Consumer groups form at once instead of after Kafka's 3 s.
_ENV = {"WHARF_GROUP_INITIAL_REBALANCE_DELAY_MS": "0"}


class BrokerStartError(RuntimeError):
    """The broker did not start, or stopped answering; the message ends with its log."""


@dataclass(frozen=True, slots=True)
class WharfBroker:
    """What a test gets: the broker's addresses, its own virtual host and topic prefix.

    ``amqp_url`` (for pika, aio-pika, kombu, Celery, FastStream) opens the test's virtual host
    as ``guest``; ``kafka_bootstrap`` is ``host:port``; ``topic(name)`` and ``group(name)``
    put the test's prefix before a Kafka topic or consumer group name; ``http_url`` is the
    broker's HTTP API and dashboard.
    """

    host: str
    amqp_port: int
    kafka_port: int
    http_port: int
    vhost: str
    prefix: str

    @property
    def amqp_url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.amqp_port}/{quote(self.vhost, safe='')}"

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.host}:{self.kafka_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def topic(self, name: str) -> str:
        """``name`` as this test's Kafka topic."""
        return self.prefix + name

    def group(self, name: str) -> str:
        """``name`` as this test's Kafka consumer group."""
        return self.prefix + name


class BrokerProcess:
    """One ``wharf serve`` subprocess under ``base`` (its data directory and log file)."""

    def __init__(self, base: Path, *, remove_on_stop: bool = False) -> None:
        self.base = base
        self.log_path = base / "wharf.log"
        self.ports: dict[str, int] = {}
        self._remove_on_stop = remove_on_stop
        self._proc: subprocess.Popen[bytes] | None = None
        self._admin: HTTPConnection | None = None
        self._names = itertools.count(1)
        self._default_unused = False
        self._default_dropped = False

    # -- life ----------------------------------------------------------------------------------

    def start(self) -> None:
        """Launch the broker and return without waiting for it."""
        self.base.mkdir(parents=True, exist_ok=True)
        self._default_unused = not (self.base / "data").exists()
        env = _child_env()
        argv = [sys.executable, "-m", "wharf.cli.main", "serve", "--data-dir",
                str(self.base / "data"), "--host", HOST, "--kafka-port", "0", "--amqp-port", "0",
                "--http-port", "0", "--fsync", "never"]  # fmt: skip
        with self.log_path.open("wb") as log:
            self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and flags
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )

    def wait_ready(self, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait for the ready line and read the ports from it (at once when read already)."""
        if self.ports:
            return
        if self._proc is None:
            raise BrokerStartError("the broker was never started")
        deadline = time.monotonic() + timeout_s
        while True:
            found = _READY.search(self.log_path.read_text(errors="replace"))
            if found:
                self.ports = {n: int(p) for n, p in _ENDPOINT.findall(found["endpoints"])}
                return
            if self._proc.poll() is not None:
                raise self._error(f"the broker exited with code {self._proc.returncode}")
            if time.monotonic() > deadline:
                raise self._error(f"the broker was not ready after {timeout_s:.0f} s")
            time.sleep(_POLL_S)

    def stop(self) -> None:
        """Kill the broker: its data is thrown away, so a graceful stop (which waits some
        100 ms for the interpreter to exit) would only make every session end later."""
        if self._admin is not None:
            self._admin.close()
            self._admin = None
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        if self._remove_on_stop:
            shutil.rmtree(self.base, ignore_errors=True)

    # -- namespaces ----------------------------------------------------------------------------

    def whole(self) -> WharfBroker:
        """The broker as it is: the default virtual host ``/`` and no topic prefix."""
        self._default_unused = False
        self._restore_default()
        return self._broker("/", "")

    def namespace(self, label: str) -> WharfBroker:
        """A virtual host of its own and a topic prefix named after ``label`` (a test's name)
        and a counter: the default ``/`` the first time if nothing used it yet, else a new
        one granted to ``guest``."""
        name = f"t{next(self._names)}-{_UNSAFE.sub('_', label)[:60]}"
        if self._default_unused:
            self._default_unused = False
            return self._broker("/", name + ".")
        self._restore_default()
        self._create_vhost(name)
        return self._broker(name, name + ".")

    def drop(self, broker: WharfBroker) -> None:
        """Delete ``broker``'s virtual host with everything in it (``/`` is made again, empty,
        before the next namespace)."""
        if broker.vhost == "/":
            self._default_dropped = True
        else:
            self._request("DELETE", f"/api/vhosts/{quote(broker.vhost, safe='')}")

    def _restore_default(self) -> None:
        if self._default_dropped:
            self._default_dropped = False
            self._request("DELETE", "/api/vhosts/%2F")
            self._create_vhost("/")

    def _create_vhost(self, name: str) -> None:
        self._request("PUT", f"/api/vhosts/{quote(name, safe='')}")
        self._request("PUT", f"/api/users/guest/permissions?vhost={quote(name, safe='')}", b"{}")

    def _broker(self, vhost: str, prefix: str) -> WharfBroker:
        self.wait_ready()
        ports = self.ports
        return WharfBroker(HOST, ports["amqp"], ports["kafka"], ports["http"], vhost, prefix)

    def _request(self, method: str, path: str, body: bytes | None = None) -> None:
        from http.client import HTTPConnection, HTTPException

        self.wait_ready()
        headers = {"Content-Type": "application/json"} if body is not None else {}
        for attempt in (1, 2):  # a kept-alive connection the broker closed is opened again
            if self._admin is None:
                self._admin = HTTPConnection(HOST, self.ports["http"], timeout=30)
            try:
                self._admin.request(method, path, body, headers)
                response = self._admin.getresponse()
                text = response.read().decode(errors="replace")
            except (OSError, HTTPException) as exc:
                self._admin.close()
                self._admin = None
                if attempt == 2:
                    raise self._error(f"{method} {path} failed: {exc}") from None
                continue
            if response.status >= 300:
                raise self._error(f"{method} {path} answered {response.status}: {_reason(text)}")
            return

    # -- log -----------------------------------------------------------------------------------

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def log_since(self, offset: int) -> str:
        """The log written after byte ``offset``."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(offset)
                return log.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def _error(self, message: str) -> BrokerStartError:
        return BrokerStartError(f"{message}; its log ({self.log_path}):\n{self.log_since(0)}")


def _child_env() -> dict[str, str]:
    """This environment without ``WHARF_*`` settings, plus the broker's, and a path on which
    the child finds the same ``wharf`` as this process: a source tree on a relative
    ``PYTHONPATH`` would be lost once a test changes directory (pytester does)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}
    env.update(_ENV)
    home = str(Path(wharf.__file__).resolve().parents[1])
    if home not in {*site.getsitepackages(), site.getusersitepackages()}:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (home, env.get("PYTHONPATH")) if p)
    return env


def _reason(text: str) -> str:
    try:
        body = json.loads(text)
    except ValueError:
        return text
    return str(body.get("error", text)) if isinstance(body, dict) else text
