"""A framework's worker as a child process that a test can kill -9 mid-task.

The worker script (a test writes it) reports through files in a directory it is given:
``started-<n>`` when the task begins for the n-th time, ``done`` when it finished. The worker
runs in a session of its own, and a kill reaches every process of it: a worker that forks
(Celery's prefork pool) dies whole, as on a lost machine, and leaves no orphan behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

BOUND_S = 60.0


class WorkerProcess:
    """``script`` runs as ``python -c script url state *args``."""

    def __init__(self, script: str, state: Path, url: str, *args: str) -> None:
        self.state = state
        self._argv = [sys.executable, "-c", script, url, str(state), *args]
        self._proc: subprocess.Popen[bytes] | None = None
        self._killed = False

    def start(self) -> None:
        log = (self.state / "worker.log").open("ab")
        with log:
            self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and script
                self._argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        """SIGKILL to the worker's process group: the worker and any process it forked."""
        assert self._proc is not None
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # the group is gone already
            pass
        self._killed = True
        self._proc.wait(BOUND_S)

    def stop(self) -> None:
        if self._proc is not None and not self._killed:
            self.kill()  # the main process may have exited and left children running

    def wait_for(self, name: str) -> None:
        self.wait_until(name, (self.state / name).exists)

    def wait_until(self, what: str, condition: Callable[[], bool]) -> None:
        """Wait for ``condition`` while the worker lives, at most ``BOUND_S``."""
        deadline = time.monotonic() + BOUND_S
        while not condition():
            if self._proc is not None and self._proc.poll() is not None:
                raise AssertionError(f"the worker exited: {self.log()}")
            assert time.monotonic() < deadline, f"no {what} within {BOUND_S} s: {self.log()}"
            time.sleep(0.05)

    @classmethod
    def killed_mid_task(
        cls, script: str, state: Path, amqp_url: str, then: Callable[[], object] | None = None
    ) -> None:
        """Run a worker until its task starts, kill it with -9, then run another until the
        task is done (``started-2`` and ``done`` are then in ``state``) and, if given, until
        ``then()`` returns: ``done`` is written by the task, before its framework sends the
        result or the acknowledgement, which the second worker must live to send."""
        first = cls(script, state, amqp_url)
        first.start()
        try:
            first.wait_for("started-1")
            first.kill()
        finally:
            first.stop()
        second = cls(script, state, amqp_url)
        second.start()
        try:
            second.wait_for("done")
            if then is not None:
                then()
        finally:
            second.stop()

    def log(self) -> str:
        path = self.state / "worker.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""
