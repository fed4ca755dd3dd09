"""How fast ``wharf serve`` starts and how much memory it holds idle.

For each run: a fresh data directory, ``wharf serve`` (the console script beside this
interpreter, or its entry point run by this interpreter when there is none) on free loopback
ports, timed from just before the exec to the moment its ``wharf ready:`` line is read from its
stderr; then to the moment every port has answered a first request sent right after that line
(HTTP ``GET /healthz``, Kafka ApiVersions, the AMQP protocol header answered by
Connection.Start; sent at once, one thread each); then, after one idle second, its resident set
size (``VmRSS`` of ``/proc/PID/status``).
The broker is stopped with SIGTERM after each run. Bytecode caches are on (as after a pip
install, which compiles them), whatever ``PYTHONDONTWRITEBYTECODE`` says: a first start, not
counted, writes them. Prints each run and the medians.

Baseline in the same run: the bare interpreter (``python -c pass``) from exec to exit, and its
RSS, so the figures can be read as what Wharf adds to Python on this machine.

    .venv/bin/python benchmarks/startup.py [runs] [python ...]

Named interpreters (of other environments: before and after a change) are measured instead of
this one, taking turns run by run, so that a change of load on a shared machine hits each alike.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

IDLE_S = 1.0
READY_TIMEOUT_S = 30.0


def serve_command(python: str) -> list[str]:
    script = Path(python).with_name("wharf")
    if script.exists():
        return [str(script)]
    return [python, "-c", "from wharf.cli.main import main; main()"]


def child_env() -> dict[str, str]:
    """This environment, but writing bytecode caches: a pip install compiles them, and the
    warm-up run writes them for an editable one."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def _exchange(port: int, request: bytes, answered: bytes) -> None:
    """Send ``request`` and read until the answer holds ``answered``."""
    with socket.create_connection(("127.0.0.1", port), timeout=READY_TIMEOUT_S) as conn:
        conn.sendall(request)
        received = b""
        while answered not in received:
            chunk = conn.recv(65536)
            if not chunk:
                raise RuntimeError(f"port {port} closed before answering")
            received += chunk


_FIRST_REQUESTS = {
    "http": (b"GET /healthz HTTP/1.1\r\nHost: wharf\r\nConnection: close\r\n\r\n", b"\r\n\r\n"),
    # ApiVersions v0, correlation id 7, no client id; the answer starts with its size and the id
    "kafka": (struct.pack(">ihhih", 10, 18, 0, 7, -1), struct.pack(">i", 7)),
    # Connection.Start: a method frame (type 1) of class 10, method 10
    "amqp": (b"AMQP\x00\x00\x09\x01", b"\x00\x0a\x00\x0a"),
}


def first_answers(ready_line: str) -> None:
    """Send each port its first request at once; return when every port has answered."""
    ports = {name: int(port) for name, port in re.findall(r"(\w+)=[^\s]+:(\d+)", ready_line)}
    errors: list[BaseException] = []

    def ask(name: str) -> None:
        try:
            _exchange(ports[name], *_FIRST_REQUESTS[name])
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=ask, args=(name,)) for name in _FIRST_REQUESTS]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def one_start(python: str) -> tuple[float, float, float]:
    """Seconds from exec to the ready line and to every port's first answer, and the RSS in
    MiB after an idle second."""
    with tempfile.TemporaryDirectory(prefix="wharf-startup-") as data:
        argv = [*serve_command(python), "serve", "--data-dir", data, "--host", "127.0.0.1",
                "--kafka-port", "0", "--amqp-port", "0", "--http-port", "0"]  # fmt: skip
        started = time.perf_counter()
        proc = subprocess.Popen(  # noqa: S603 - our own entry point
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=child_env(),
        )
        try:
            assert proc.stderr is not None
            deadline = time.monotonic() + READY_TIMEOUT_S
            while True:
                line = proc.stderr.readline()
                if b"wharf ready:" in line:
                    ready = time.perf_counter() - started
                    break
                if not line or time.monotonic() > deadline:
                    raise RuntimeError(f"no ready line (exit code {proc.poll()})")
            first_answers(line.decode())
            answered = time.perf_counter() - started
            time.sleep(IDLE_S)
            rss = rss_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(READY_TIMEOUT_S)
            if proc.stderr is not None:
                proc.stderr.close()
    return ready, answered, rss


def bare_interpreter(python: str) -> tuple[float, float]:
    started = time.perf_counter()
    subprocess.run([python, "-c", "pass"], check=True, env=child_env())  # noqa: S603
    elapsed = time.perf_counter() - started
    proc = subprocess.Popen(  # noqa: S603
        [python, "-c", "import time; time.sleep(5)"], env=child_env()
    )
    try:
        time.sleep(0.3)
        rss = rss_mib(proc.pid)
    finally:
        proc.kill()
        proc.wait()
    return elapsed, rss


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    pythons = sys.argv[2:] or [sys.executable]
    print(f"{runs} runs, load average {os.getloadavg()[0]:.1f}")
    for python in pythons:
        one_start(python)  # warm the page cache and the bytecode caches
    figures: dict[str, dict[str, list[float]]] = {python: {} for python in pythons}
    for i in range(runs):
        for python in pythons:
            ready, answered, rss = one_start(python)
            bare, bare_rss = bare_interpreter(python)
            for name, value in (("ready", ready), ("answered", answered), ("rss", rss),
                                ("bare", bare), ("bare_rss", bare_rss)):  # fmt: skip
                figures[python].setdefault(name, []).append(value)
            print(f"run {i + 1}: {' '.join(serve_command(python))} serve: ready"
                  f" {ready * 1000:.0f} ms, every port answered {answered * 1000:.0f} ms,"
                  f" idle RSS {rss:.1f} MiB (bare python: {bare * 1000:.0f} ms,"
                  f" {bare_rss:.1f} MiB)")  # fmt: skip
    for python in pythons:
        median = {name: statistics.median(values) for name, values in figures[python].items()}
        print(f"median, {' '.join(serve_command(python))} serve:"
              f" ready {median['ready'] * 1000:.0f} ms,"
              f" every port answered {median['answered'] * 1000:.0f} ms,"
              f" idle RSS {median['rss']:.1f} MiB; bare python"
              f" {median['bare'] * 1000:.0f} ms, {median['bare_rss']:.1f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
