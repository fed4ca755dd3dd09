"""Run ``wharf serve`` as a real subprocess for tests.

:class:`WharfProcess` starts the server on 127.0.0.1 with port 0 for every listener, waits for
its ``wharf ready:`` log line, and reads the bound ports from it. Listeners that are not built
(or not started) are simply absent: their port attribute is ``None``.

The process writes its log to a file (never a pipe, which could fill up and block it); each
start gets a new file, and :meth:`WharfProcess.log_text` returns the current one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 30.0
_REBIND_ATTEMPTS = 10
# A client that cannot answer the server's close (a blocked pika connection) would hold every
# shutdown for the default 15 s; tests give connections 5 s (override with env=...).
_TEST_ENV = {"WHARF_SHUTDOWN_TIMEOUT_MS": "5000"}

_READY_MARKER = "wharf ready:"
_ENDPOINT = re.compile(r"(\w+)=(\[[^\]]+\]|[^\s:=]+):(\d+)")


class WharfProcessError(AssertionError):
    """The server did not start, did not stop, or stopped with an error."""


def wharf_command(*args: str) -> list[str]:
    """The argv that runs the ``wharf`` CLI from the interpreter running the tests."""
    return [sys.executable, "-m", "wharf.cli.main", *args]


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without ``WHARF_*`` variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WHARF_")}
    env.update(extra or {})
    return env


def run_wharf(
    *args: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """Run ``wharf <args>`` to completion and capture its output (for short-lived commands)."""
    return subprocess.run(
        wharf_command(*args),
        env=clean_env(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def _log_message(line: str) -> str:
    """The message text of one log line, in either log format."""
    if line.startswith("{"):
        try:
            obj = json.loads(line)
        except ValueError:
            return line
        if isinstance(obj, dict):
            return str(obj.get("message", ""))
    return line


class WharfProcess:
    """One ``wharf serve`` subprocess on a data directory; restartable."""

    def __init__(
        self,
        data_dir: Path,
        args: Sequence[str] = (),
        *,
        log_dir: Path,
        env: Mapping[str, str] | None = None,
        ready_timeout: float = READY_TIMEOUT_S,
    ) -> None:
        self.data_dir = data_dir
        self.args = list(args)
        self.log_dir = log_dir
        self.env = {**_TEST_ENV, **(env or {})}
        self.ready_timeout = ready_timeout
        self.endpoints: dict[str, tuple[str, int]] = {}
        self.log_paths: list[Path] = []
        self._proc: subprocess.Popen[bytes] | None = None

    # -- addresses ------------------------------------------------------------------------------

    def _port(self, name: str) -> int | None:
        endpoint = self.endpoints.get(name)
        return endpoint[1] if endpoint else None

    @property
    def kafka_port(self) -> int | None:
        return self._port("kafka")

    @property
    def amqp_port(self) -> int | None:
        return self._port("amqp")

    @property
    def http_port(self) -> int | None:
        return self._port("http")

    @property
    def kafka_bootstrap(self) -> str:
        if self.kafka_port is None:
            raise WharfProcessError("the server has no kafka listener")
        return f"127.0.0.1:{self.kafka_port}"

    @property
    def http_url(self) -> str:
        if self.http_port is None:
            raise WharfProcessError("the server has no http listener")
        return f"http://127.0.0.1:{self.http_port}"

    # -- process --------------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise WharfProcessError("the server was never started")
        return self._proc.pid

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def command(self, port_args: Sequence[str] | None = None) -> list[str]:
        ports = port_args or ["--kafka-port", "0", "--amqp-port", "0", "--http-port", "0"]
        return wharf_command(
            "serve", "--host", "127.0.0.1", *ports, "--data-dir", str(self.data_dir), *self.args
        )

    def start(self, *, wait_ready: bool = True, port_args: Sequence[str] | None = None) -> None:
        """Start the server; with ``wait_ready``, return once it logged its ready line."""
        if self.running:
            raise WharfProcessError("the server is already running")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"wharf-{len(self.log_paths) + 1}.log"
        self.log_paths.append(log_path)
        self.endpoints = {}
        with log_path.open("wb") as log_file:
            self._proc = subprocess.Popen(
                self.command(port_args),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=clean_env(self.env),
            )
        if wait_ready:
            self.wait_ready()

    def log_text(self) -> str:
        """Everything the current (or last) run has logged so far."""
        if not self.log_paths:
            return ""
        return self.log_paths[-1].read_text(errors="replace")

    def _failure(self, what: str) -> WharfProcessError:
        return WharfProcessError(
            f"{what}\n--- wharf log ({self.log_paths[-1]}) ---\n{self.log_text()}"
        )

    def wait_ready(self) -> None:
        """Wait for the ready line and record the bound endpoints."""
        deadline = time.monotonic() + self.ready_timeout
        while True:
            for line in self.log_text().splitlines():
                message = _log_message(line)
                if _READY_MARKER in message:
                    ready = message.split(_READY_MARKER, 1)[1]
                    self.endpoints = {
                        name: (host.strip("[]"), int(port))
                        for name, host, port in _ENDPOINT.findall(ready)
                    }
                    return
            if not self.running:
                raise self._failure(f"wharf serve exited with code {self.returncode} before ready")
            if time.monotonic() > deadline:
                self._force_kill()
                raise self._failure(f"wharf serve was not ready within {self.ready_timeout} s")
            time.sleep(0.05)

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """Wait until the current run's log matches ``pattern`` (a regex); return the match."""
        regex = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            match = regex.search(self.log_text())
            if match:
                return match
            if time.monotonic() > deadline:
                raise self._failure(f"no log line matched {pattern!r} within {timeout} s")
            time.sleep(0.05)

    def wait_exit(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """Wait for the process to exit on its own; return its exit code."""
        assert self._proc is not None
        try:
            return self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self._force_kill()
            raise self._failure(f"wharf serve did not exit within {timeout} s") from None

    def terminate(self, timeout: float = STOP_TIMEOUT_S) -> None:
        """SIGTERM, wait, and require the graceful-shutdown exit code 0."""
        if self._proc is None or not self.running:
            raise self._failure(f"wharf serve is not running (exit code {self.returncode})")
        self._proc.send_signal(signal.SIGTERM)
        code = self.wait_exit(timeout)
        if code != 0:
            raise self._failure(f"wharf serve exited with code {code} after SIGTERM")

    def kill(self) -> None:
        """SIGKILL (a crash: nothing is flushed or closed) and reap the process."""
        if self._proc is None or not self.running:
            raise self._failure(f"wharf serve is not running (exit code {self.returncode})")
        self._force_kill()

    def _force_kill(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()

    def restart(self, *, keep_ports: bool = False) -> None:
        """Stop (gracefully, if still running) and start again on the same data dir and options.

        With ``keep_ports`` the new process binds the ports the old one had, so clients can
        reconnect to the same address; otherwise it gets fresh ports.
        """
        old = dict(self.endpoints)
        if self.running:
            self.terminate()
        if not keep_ports:
            self.start()
            return
        port_args: list[str] = []
        for name in ("kafka", "amqp", "http"):
            port = old[name][1] if name in old else 0
            port_args += [f"--{name}-port", str(port)]
        for attempt in range(_REBIND_ATTEMPTS):
            try:
                self.start(port_args=port_args)
                return
            except WharfProcessError:
                # Another socket may hold one of the old ports for a moment; try again.
                port_taken = "address already in use" in self.log_text().lower()
                if not port_taken or attempt == _REBIND_ATTEMPTS - 1:
                    raise
                time.sleep(0.5)

    def cleanup(self) -> str | None:
        """Stop the process if it still runs; return a problem description, or None if clean."""
        if self._proc is None or not self.running:
            return None
        self._proc.send_signal(signal.SIGTERM)
        try:
            code = self._proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._force_kill()
            return str(self._failure(f"wharf serve ignored SIGTERM for {STOP_TIMEOUT_S} s"))
        if code != 0:
            return str(self._failure(f"wharf serve exited with code {code} after SIGTERM"))
        return None
