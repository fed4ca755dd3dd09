"""How fast ``wharf serve`` starts and how much memory it holds idle.

For each run: a fresh data directory, ``wharf serve`` (the console script beside this
interpreter, or its entry point run by this interpreter when there is none) on free loopback
ports, timed from just before the exec to the moment its ``wharf ready:`` line is read from its
stderr; then, after one idle second, its resident set size (``VmRSS`` of ``/proc/PID/status``).
The broker is stopped with SIGTERM after each run. Bytecode caches are on (as after a pip
install, which compiles them), whatever ``PYTHONDONTWRITEBYTECODE`` says: a first start, not
counted, writes them. Prints each run and the medians.

Baseline in the same run: the bare interpreter (``python -c pass``) from exec to exit, and its
RSS, so the figures can be read as what Wharf adds to Python on this machine.

    .venv/bin/python benchmarks/startup.py [runs]
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

IDLE_S = 1.0
READY_TIMEOUT_S = 30.0


def serve_command() -> list[str]:
    script = Path(sys.executable).with_name("wharf")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from wharf.cli.main import main; main()"]


def child_env() -> dict[str, str]:
    """This environment, but writing bytecode caches: a pip install compiles them, and the
    warm-up run writes them for an editable one."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def one_start() -> tuple[float, float]:
    """Seconds from exec to the ready line, and the RSS in MiB after an idle second."""
    with tempfile.TemporaryDirectory(prefix="wharf-startup-") as data:
        argv = [*serve_command(), "serve", "--data-dir", data, "--host", "127.0.0.1",
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
            time.sleep(IDLE_S)
            rss = rss_mib(proc.pid)
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(READY_TIMEOUT_S)
            if proc.stderr is not None:
                proc.stderr.close()
    return ready, rss


def bare_interpreter() -> tuple[float, float]:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True, env=child_env())  # noqa: S603
    elapsed = time.perf_counter() - started
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", "import time; time.sleep(5)"], env=child_env()
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
    print(f"{' '.join(serve_command())} serve, {runs} runs, load average "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    one_start()  # warm the page cache and the bytecode caches
    starts, rsses, bares, bare_rsses = [], [], [], []
    for i in range(runs):
        ready, rss = one_start()
        bare, bare_rss = bare_interpreter()
        starts.append(ready)
        rsses.append(rss)
        bares.append(bare)
        bare_rsses.append(bare_rss)
        print(f"run {i + 1}: ready {ready * 1000:.0f} ms, idle RSS {rss:.1f} MiB"
              f" (bare python: {bare * 1000:.0f} ms, {bare_rss:.1f} MiB)")  # fmt: skip
    print(f"median: ready {statistics.median(starts) * 1000:.0f} ms,"
          f" idle RSS {statistics.median(rsses):.1f} MiB;"
          f" bare python {statistics.median(bares) * 1000:.0f} ms,"
          f" {statistics.median(bare_rsses):.1f} MiB")  # fmt: skip


if __name__ == "__main__":
    main()
