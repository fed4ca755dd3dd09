"""A throwaway PostgreSQL server for tests and benchmarks.

:class:`PostgresServer` runs Debian's PostgreSQL binaries (``/usr/lib/postgresql/<version>/bin``,
the newest installed; ``.ci/system-deps test`` installs the package) on a cluster created with
``initdb`` in a fresh temporary directory. It listens on 127.0.0.1 on a free port and puts its
unix socket in that directory, so it touches nothing else on the machine. PostgreSQL refuses to
run as root: when the tests run as root, every server command runs as the ``postgres`` system
user (``runuser -u postgres --``) and the directory is handed to that user.

The superuser (``postgres``, trusted over the unix socket only) creates a login user with a
password and a database it owns; :attr:`url` is the ``postgresql://user:password@host:port/db``
a client uses. :meth:`create_database` makes another database owned by that user (one per test,
so tests never see each other's rows). :meth:`stop` is a fast shutdown; :meth:`start` and
:meth:`restart` bring the same cluster back on the same port, for fault tests.

Durability is off by default (``fsync=off``): a clean or crashed *server* loses nothing, only a
crash of the machine would, and tests run several times faster. ``durable=True`` keeps
PostgreSQL's defaults, for benchmarks.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

USER = "wharf"
PASSWORD = "wharf-test-password"  # a throwaway server on loopback
DATABASE = "wharf"
_SUPERUSER = "postgres"
_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 60.0
_PORT_ATTEMPTS = 5


class PostgresServerError(AssertionError):
    """The test server did not start, stop or run a command."""


def postgres_bin_dir() -> Path:
    """The newest installed PostgreSQL's binary directory."""
    root = Path("/usr/lib/postgresql")
    versions = sorted(
        (int(p.name), p / "bin") for p in root.glob("*") if p.name.isdigit() and p.is_dir()
    )
    if not versions:
        raise PostgresServerError(
            f"no PostgreSQL under {root}: run `.ci/system-deps test` (Debian's postgresql)"
        )
    return versions[-1][1]


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory; see the module docstring."""

    def __init__(self, *, durable: bool = False) -> None:
        self.bin_dir = postgres_bin_dir()
        self.durable = durable
        self.host = "127.0.0.1"
        self.port = 0
        self.base = Path(tempfile.mkdtemp(prefix="wharf-pg-"))
        self.data_dir = self.base / "data"
        self.log_file = self.base / "postgres.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            owner = pwd.getpwnam(_SUPERUSER)
            os.chown(self.base, owner.pw_uid, owner.pw_gid)
            self._as_user = ["runuser", "-u", _SUPERUSER, "--"]
        self._running = False

    # -- lifecycle ----------------------------------------------------------------------------

    def init(self) -> None:
        """``initdb``, start on a free port, create the login user and its database."""
        self._run(
            [
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                _SUPERUSER,
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )
        for attempt in range(_PORT_ATTEMPTS):
            self.port = _free_port()
            try:
                self.start()
                break
            except PostgresServerError:
                if attempt == _PORT_ATTEMPTS - 1 or "already in use" not in self.log_text():
                    raise
        self.psql(f"CREATE ROLE {USER} LOGIN PASSWORD '{PASSWORD}'")
        self.create_database(DATABASE)

    def start(self) -> None:
        """Start the server (on :attr:`port`) and wait until it accepts connections."""
        options = [
            f"-c listen_addresses={self.host}",
            f"-c port={self.port}",
            f"-c unix_socket_directories={self.base}",
            "-c max_connections=200",
            "-c shared_buffers=32MB",
            "-c deadlock_timeout=100ms",  # deadlock tests need not wait the default second
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c full_page_writes=off", "-c wal_init_zero=off"]
        self._run(
            [
                "pg_ctl",
                "start",
                "-D",
                str(self.data_dir),
                "-l",
                str(self.log_file),
                "-w",
                "-t",
                str(int(_START_TIMEOUT_S)),
                "-o",
                " ".join(options),
            ],
            timeout=_START_TIMEOUT_S + 10,
        )
        self._running = True

    def stop(self) -> None:
        """Fast shutdown: open sessions are ended, the server exits cleanly."""
        if not self._running:
            return
        self._run(
            ["pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60"],
            timeout=_STOP_TIMEOUT_S + 10,
        )
        self._running = False

    def restart(self) -> None:
        """Stop (fast) and start again on the same port: every client connection breaks."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop if running and remove the directory."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.base, ignore_errors=True)

    @property
    def running(self) -> bool:
        return self._running

    # -- use ----------------------------------------------------------------------------------

    def url_for(
        self, database: str, *, user: str = USER, password: str = PASSWORD, port: int | None = None
    ) -> str:
        return f"postgresql://{user}:{password}@{self.host}:{port or self.port}/{database}"

    @property
    def url(self) -> str:
        """The login user's URL for the default database."""
        return self.url_for(DATABASE)

    def create_database(self, name: str) -> str:
        """A new database owned by the login user; returns its URL."""
        self.psql(f'CREATE DATABASE "{name}" OWNER {USER}')
        return self.url_for(name)

    def drop_database(self, name: str) -> None:
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def psql(self, sql: str, *, database: str = "postgres") -> str:
        """Run ``sql`` as the superuser over the unix socket; returns its unaligned output."""
        result = self._run(
            [
                "psql",
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                str(self.base),
                "-p",
                str(self.port),
                "-U",
                _SUPERUSER,
                "-d",
                database,
                "-c",
                sql,
            ]
        )
        return result.stdout

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def _run(
        self, argv: Sequence[str], *, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        command = [*self._as_user, str(self.bin_dir / argv[0]), *argv[1:]]
        try:
            result = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=self.base,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresServerError(f"{argv[0]} timed out after {timeout} s") from exc
        if result.returncode != 0:
            raise PostgresServerError(
                f"{' '.join(argv[:2])} exited with {result.returncode}\n"
                f"{result.stdout}{result.stderr}\n--- server log ---\n{self.log_text()[-4000:]}"
            )
        return result


@contextmanager
def postgres_server(*, durable: bool = False) -> Iterator[PostgresServer]:
    """A started server with its login user and database, stopped and removed on exit (also when
    the body raises)."""
    server = PostgresServer(durable=durable)
    try:
        server.init()
        yield server
    finally:
        server.cleanup()

