"""``wharf serve`` as a real process: ready line, signals, data-dir lock, restart."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
from pathlib import Path

from helpers.broker_process import WharfProcess, clean_env, run_wharf, wharf_command


def _ready_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if re.search(r"\bready\b", line)]


def _assert_lock_free(data_dir: Path) -> None:
    fd = os.open(data_dir / "wharf.pid", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # raises BlockingIOError if still held
        assert os.read(fd, 64) == b""  # the pid is cleared on a clean stop
    finally:
        os.close(fd)


def test_ready_line_is_logged_once_and_names_every_bound_listener(
    wharf_server: WharfProcess,
) -> None:
    lines = _ready_lines(wharf_server.log_text())
    assert len(lines) == 1, lines
    assert "wharf ready:" in lines[0]
    assert list(wharf_server.endpoints) == ["kafka", "amqp", "http"]
    for name, (host, port) in wharf_server.endpoints.items():
        assert f"{name}={host}:{port}" in lines[0]
        assert port != 0
        with socket.create_connection((host, port), timeout=10):
            pass  # something really listens there


def _answer(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as conn:
        conn.sendall(request)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    return received


def test_an_http_request_sent_as_soon_as_the_ready_line_is_out_is_answered(
    tmp_path: Path,
) -> None:
    """The HTTP port listens before aiohttp is loaded, which happens after the ready line
    (wharf.http.listener): a request sent at once waits in the backlog and is answered."""
    argv = wharf_command("serve", "--data-dir", str(tmp_path / "data"), "--host", "127.0.0.1",
                         "--kafka-port", "0", "--amqp-port", "0", "--http-port", "0",
                         "--log-level", "debug")  # fmt: skip
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=clean_env(), text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "wharf ready:" in line:
                break
        else:
            raise AssertionError(f"no ready line; exit code {proc.wait()}")
        match = re.search(r"http=127\.0\.0\.1:(\d+)", line)
        assert match, line
        request = b"GET /readyz HTTP/1.1\r\nHost: wharf\r\nConnection: close\r\n\r\n"
        response = _answer(int(match[1]), request)
        assert response.startswith(b"HTTP/1.1 200"), response
        assert b'"ready":true' in response, response
    finally:
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=30)[1]
    assert proc.returncode == 0, rest
    assert "the HTTP API serves port" in rest  # attached after the ready line


def test_sigterm_stops_gracefully_with_exit_code_0_and_releases_the_lock(
    wharf_server: WharfProcess,
) -> None:
    assert (wharf_server.data_dir / "wharf.pid").read_text().strip() == str(wharf_server.pid)
    wharf_server.terminate()  # asserts exit code 0
    log = wharf_server.log_text()
    assert "received SIGTERM, shutting down gracefully" in log
    assert "wharf stopped" in log
    _assert_lock_free(wharf_server.data_dir)


def test_sigint_stops_gracefully_too(wharf_server: WharfProcess) -> None:
    os.kill(wharf_server.pid, signal.SIGINT)
    assert wharf_server.wait_exit() == 0
    assert "received SIGINT" in wharf_server.log_text()


def test_second_server_on_the_same_data_dir_refuses_and_names_the_first(
    wharf_server: WharfProcess,
) -> None:
    result = run_wharf(
        "serve", "--data-dir", str(wharf_server.data_dir), "--host", "127.0.0.1",
        "--kafka-port", "0", "--amqp-port", "0", "--http-port", "0",
    )  # fmt: skip
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert len(lines) == 1, result.stderr
    assert f"is in use by another wharf broker (pid {wharf_server.pid})" in lines[0]
    assert not _ready_lines(result.stderr)
    assert wharf_server.running  # the first one is unaffected
    assert (wharf_server.data_dir / "wharf.pid").read_text().strip() == str(wharf_server.pid)


def test_restart_on_the_same_data_dir(wharf_server: WharfProcess) -> None:
    first_pid = wharf_server.pid
    wharf_server.restart()
    assert wharf_server.pid != first_pid
    assert len(_ready_lines(wharf_server.log_text())) == 1


def test_restart_after_kill_9(wharf_server: WharfProcess) -> None:
    wharf_server.kill()
    assert wharf_server.returncode == -signal.SIGKILL
    wharf_server.restart()  # the kernel dropped the dead process's lock
    assert wharf_server.running


def test_restart_keeping_the_ports(wharf_server: WharfProcess) -> None:
    before = dict(wharf_server.endpoints)
    wharf_server.restart(keep_ports=True)
    assert wharf_server.endpoints == before


def test_json_log_format(start_wharf) -> None:  # type: ignore[no-untyped-def]
    server: WharfProcess = start_wharf("--log-format", "json")
    server.terminate()
    records = [json.loads(line) for line in server.log_text().splitlines()]
    assert {"time", "level", "logger", "message"} <= set(records[0])
    assert [r for r in records if r["message"].startswith("wharf ready:")]
    assert records[-1]["message"] == "wharf stopped"


def test_unusable_data_dir_is_refused_with_one_line(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "file"
    not_a_dir.write_text("")
    result = run_wharf("serve", "--data-dir", str(not_a_dir / "data"), "--kafka-port", "0",
                       "--amqp-port", "0", "--http-port", "0")  # fmt: skip
    assert result.returncode == 1
    (line,) = [line for line in result.stderr.splitlines() if "ERROR" in line]
    assert f"cannot use data directory {not_a_dir / 'data'}: Not a directory" in line
    assert "Traceback" not in result.stderr


def test_a_taken_port_stops_startup_with_one_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        ports = ["--kafka-port", port, "--amqp-port", port, "--http-port", port]
        result = run_wharf("serve", "--data-dir", str(tmp_path / "data"), *ports)
    assert result.returncode == 1, result.stderr
    (line,) = [line for line in result.stderr.splitlines() if "ERROR" in line]
    expected = r"cannot start the \w+ listener on 127\.0\.0\.1: .*address already in use"
    assert re.search(expected, line, flags=re.IGNORECASE), line
    assert not _ready_lines(result.stderr)
    assert "Traceback" not in result.stderr
