"""Wharf against RabbitMQ with the same AMQP clients, in one run (peerbench's bench.py).

Starts ``wharf serve`` (fresh data directory, ``--fsync always``) and RabbitMQ (Debian's
rabbitmq-server through peerbench's ``peers.sh``, loopback only) on free ports, runs the
``rmq-durable`` and ``rmq-transient`` suites with pika and aio-pika at 100 B and 1 KiB against
each, stops both, and prints bench.py's median tables plus Wharf/RabbitMQ ratios.

    .venv/bin/python benchmarks/amqp_peerbench.py --duration 5 --lat-duration 6 --reps 1

Needs peerbench (``../shared/peerbench`` beside the repository, or ``--peerbench DIR``) and
``/usr/lib/rabbitmq/bin``; every process it starts is stopped by its own PID at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
READY = re.compile(r"wharf ready: .*amqp=127\.0\.0\.1:(\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_wharf(data_dir: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    wharf = ROOT / ".venv" / "bin" / "wharf"
    log = log_path.open("wb")
    proc = subprocess.Popen(
        [str(wharf), "serve", "--data-dir", str(data_dir), "--amqp-port", "0",
         "--kafka-port", "0", "--http-port", "0", "--fsync", "always"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = READY.search(log_path.read_text(errors="replace"))
        if match:
            return proc, int(match.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"wharf serve did not start:\n{log_path.read_text()}")


def peers(peerbench: Path, state: Path, port: int, *args: str) -> str:
    env = dict(os.environ, PB_STATE=str(state), RMQ_PORT=str(port),
               RMQ_DIST_PORT=str(free_port()), EPMD_PORT=str(free_port()))
    out = subprocess.run(["bash", str(peerbench / "peers.sh"), *args], env=env,
                         capture_output=True, text=True, timeout=180)
    return out.stdout + out.stderr


def bench(peerbench: Path, port: int, pid: int, out: Path, a: argparse.Namespace) -> None:
    cmd = [sys.executable, str(peerbench / "bench.py"), "--suite", "rmq-durable",
           "--suite", "rmq-transient", "--clients", a.clients, "--sizes", a.sizes,
           "--reps", str(a.reps), "--duration", str(a.duration),
           "--lat-duration", str(a.lat_duration), "--port", str(port),
           "--broker-pid", str(pid), "--out", str(out)]
    subprocess.run(cmd, check=False, timeout=3600)


def medians(path: Path) -> dict[tuple[str, str, int, str], dict[str, float]]:
    groups: dict[tuple[str, str, int, str], list[dict[str, float]]] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        if row.get("ok"):
            key = (row["suite"], row["client"], row["size"], row["mode"])
            groups.setdefault(key, []).append(row)
    result = {}
    for key, rows in groups.items():
        result[key] = {
            m: statistics.median([r[m] for r in rows if r.get(m) is not None])
            for m in ("e2e_rate", "msgs_per_broker_cpu_s", "p50_ms", "p99_ms")
            if any(r.get(m) is not None for r in rows)
        }
    return result


def print_ratios(wharf: Path, rabbit: Path) -> None:
    w, r = medians(wharf), medians(rabbit)
    print("\n### Wharf / RabbitMQ (medians; >1 is better for rates, <1 better for latency)\n")
    print("| suite | client | size | mode | metric | Wharf | RabbitMQ | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for key in sorted(set(w) & set(r)):
        for metric in ("e2e_rate", "msgs_per_broker_cpu_s", "p50_ms", "p99_ms"):
            if metric in w[key] and metric in r[key] and r[key][metric]:
                wv, rv = w[key][metric], r[key][metric]
                print(f"| {' | '.join(map(str, key))} | {metric} | {wv:,.2f} | {rv:,.2f} | "
                      f"{wv / rv:.2f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--peerbench", type=Path, default=ROOT.parent / "shared" / "peerbench")
    p.add_argument("--clients", default="pika,aiopika")
    p.add_argument("--sizes", default="100,1024")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--lat-duration", type=float, default=6.0)
    p.add_argument("--out-dir", type=Path, default=None)
    p.add_argument("--skip-rabbitmq", action="store_true")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wharf-amqp-bench-"))
    out_dir = a.out_dir or work
    out_dir.mkdir(parents=True, exist_ok=True)
    wharf_out, rabbit_out = out_dir / "wharf.jsonl", out_dir / "rabbitmq.jsonl"
    proc, port = start_wharf(work / "data", work / "wharf.log")
    try:
        print(f"== Wharf (pid {proc.pid}, port {port})", flush=True)
        bench(a.peerbench, port, proc.pid, wharf_out, a)
    finally:
        proc.terminate()
        proc.wait(60)
    if not a.skip_rabbitmq:
        state = work / "peers"
        rmq_port = free_port()
        print(peers(a.peerbench, state, rmq_port, "start", "rabbitmq"), flush=True)
        try:
            pid = int((state / "pids" / "rabbitmq.pid").read_text())
            print(f"== RabbitMQ (pid {pid}, port {rmq_port})", flush=True)
            bench(a.peerbench, rmq_port, pid, rabbit_out, a)
        finally:
            print(peers(a.peerbench, state, rmq_port, "stop", "rabbitmq"), flush=True)
    summarize = [sys.executable, str(a.peerbench / "bench.py"), "--summarize"]
    print("\n## Wharf")
    subprocess.run([*summarize, str(wharf_out)], check=False)
    if rabbit_out.exists():
        print("\n## RabbitMQ")
        subprocess.run([*summarize, str(rabbit_out)], check=False)
        print_ratios(wharf_out, rabbit_out)
    print(f"\nraw results: {out_dir}")
    shutil.rmtree(work / "data", ignore_errors=True)  # Wharf's data directory
    shutil.rmtree(work / "peers" / "rabbitmq" / "mnesia", ignore_errors=True)


if __name__ == "__main__":
    main()
