"""The catalogue database: one PostgreSQL reached through a pool of psycopg 3 connections.

How it works:

- :meth:`Database.connect` first opens one connection on its own, so that a wrong password, a
  missing database or an unreachable server fails at once with the server's own reason (a pool
  would only retry in the background until a timeout). Then it opens the pool. Every connection
  carries ``application_name`` ``wharf <node id>`` (so ``pg_stat_activity`` names the node), a
  ``statement_timeout``, an ``idle_in_transaction_session_timeout`` (a node paused inside a
  transaction cannot hold row locks for ever: the server ends its session) and TCP keepalives
  with ``tcp_user_timeout`` (a dead link is noticed instead of waited on).
- :meth:`Database.transaction` is an async context manager giving a :class:`Transaction`. It
  takes a connection, sends ``BEGIN`` (with the isolation level asked for), runs the body and
  sends ``COMMIT`` (unless the body sent it with its last writes, in one round trip:
  ``Transaction.pipeline(commit=True)``; reads can share one too, ``fetch_each``); waiting
  for a connection, ``BEGIN``, and the body with its commit are each bounded by a timeout.
  A pooled connection that broke since its last use (the server restarted) fails on ``BEGIN``,
  before anything could be committed: it is dropped and another taken, without the caller
  knowing.
- Every driver error and timeout becomes a :class:`DatabaseError` naming the database (its URL
  without the password) and the reason. The error says whether the transaction can have
  committed: a failure before ``COMMIT`` was sent, or a server error in answer to it, leaves
  nothing committed; a connection lost or a timeout *during* ``COMMIT`` leaves the outcome
  unknown (``outcome_unknown``), and nothing here retries such a transaction.
- :meth:`Database.statement` runs one statement as a transaction of its own in one round
  trip, sent alone (the sessions are in autocommit, so the statement is its own
  transaction): the cheapest transaction there is, for the node and for PostgreSQL (about
  half the CPU of a pipeline of ``BEGIN``, the statement and ``COMMIT``). A statement that
  needs planner settings runs on a pool of its own, opened at first use, whose sessions were
  started with them, so it still goes alone and no other statement sees them. A pooled
  connection whose session the server ended while it was idle (a restart, an
  administrator's ``pg_terminate_backend``) has the server's last words or its end waiting
  on the socket; it is replaced before anything is sent on it. A connection lost after
  that leaves the outcome unknown.
- :meth:`Database.run` runs a body in a transaction and, when the caller asks for retries,
  runs it again after a serialization failure, a deadlock or a connection lost before the
  commit (``DatabaseError.retriable``), up to a bound, sleeping a jittered backoff in between.
- ``observe(operation, seconds)``, when given, is called after each transaction (whatever its
  outcome) with the transaction's name, and after connecting (``"connect"``): the hook for the
  latency histograms of the layers above.

The driver is imported lazily: ``pip install wharf`` without the ``cluster`` extra never needs
it. ``docs/cluster.md`` ("Catalogue database") has the measurements behind choosing psycopg.
"""

from __future__ import annotations

import asyncio
import math
import random
import select
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, LiteralString, TypeVar

from wharf.errors import StorageError

if TYPE_CHECKING:
    from psycopg import AsyncConnection, AsyncCursor
    from psycopg_pool import AsyncConnectionPool

__all__ = [
    "Database",
    "DatabaseError",
    "DatabaseSettings",
    "Observe",
    "StatementSettings",
    "Transaction",
]

T = TypeVar("T")
Observe = Callable[[str, float], None]
Params = Sequence[Any] | Mapping[str, Any]
StatementSettings = tuple[tuple[str, str], ...]
"""Server settings a statement is planned and run with: ``(("enable_sort", "off"),)``."""

_ISOLATION_LEVELS = ("read committed", "repeatable read", "serializable")
_CONFLICT_STATES = {"40001": "serialization failure", "40P01": "deadlock detected"}
_BACKOFF_BASE_S = 0.01
_BACKOFF_CAP_S = 0.5


class DatabaseError(StorageError):
    """A catalogue-database operation failed; the message names the database and the reason.

    ``retriable``: nothing was committed and running the transaction again may succeed (a
    serialization failure, a deadlock, a connection lost before the commit).
    ``outcome_unknown``: the connection was lost or timed out while committing, so the
    transaction may or may not have committed.
    """

    def __init__(
        self,
        database: str,
        reason: str,
        *,
        retriable: bool = False,
        outcome_unknown: bool = False,
        stale_connection: bool = False,
    ) -> None:
        super().__init__(f"database {database}: {reason}")
        self.database = database
        self.reason = reason
        self.retriable = retriable
        self.outcome_unknown = outcome_unknown
        self.stale_connection = stale_connection
        """The pooled connection was found broken by the first round trip of the transaction,
        which carried its ``BEGIN`` (see ``lazy_begin``): nothing ran, try another at once."""


@dataclass(frozen=True)
class DatabaseSettings:
    """Pool size and timeouts (seconds)."""

    min_connections: int = 1
    max_connections: int = 10
    connect_timeout: float = 5.0
    """Opening one connection (libpq counts whole seconds, at least 2)."""
    acquire_timeout: float = 5.0
    """Waiting for a free pooled connection (then one direct attempt says why none came)."""
    transaction_timeout: float = 30.0
    """One transaction from waiting for a connection to its commit."""
    statement_timeout: float = 15.0
    """Server side: one statement, lock waits included."""
    idle_in_transaction_timeout: float = 5.0
    """Server side: a session idle inside a transaction that long is ended (no longer than the
    default lease: a node paused inside a fenced transaction holds every takeover of its work
    until then)."""
    tcp_user_timeout: float = 10.0
    """Unacknowledged data on the socket that long means the link is dead."""


class Transaction:
    """The statements of one open transaction (psycopg's ``%s`` placeholders). Without
    parameters, one call may hold several statements separated by semicolons."""

    def __init__(
        self, connection: AsyncConnection[Any], begin: LiteralString | None = None
    ) -> None:
        self._connection = connection
        self._begin = begin
        self.opening = begin is not None
        """``BEGIN`` has not been through yet: it goes out with the first statement."""
        self.commit_sent = False
        """Whether ``COMMIT`` went out with a pipeline (``pipeline(commit=True)``)."""

    @asynccontextmanager
    async def _sending(self) -> AsyncIterator[None]:
        """Around the sending of statements: a pending ``BEGIN`` goes ahead of them, in the
        same round trip (pipeline mode)."""
        begin, self._begin = self._begin, None
        if begin is None:
            yield
            return
        async with self._connection.pipeline():
            await self._connection.execute(begin)
            yield
        self.opening = False

    async def _cursor(self, sql: LiteralString, params: Params) -> AsyncCursor[Any]:
        async with self._sending():
            cursor = await self._connection.execute(sql, params or None)
        return cursor

    async def execute(self, sql: LiteralString, params: Params = ()) -> int:
        """Run a statement; returns the number of rows it touched."""
        return (await self._cursor(sql, params)).rowcount

    async def executemany(self, sql: LiteralString, rows: Iterable[Params]) -> None:
        async with self._sending():
            pass
        async with self._connection.cursor() as cursor:
            await cursor.executemany(sql, rows)

    async def fetchone(self, sql: LiteralString, params: Params = ()) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = await (await self._cursor(sql, params)).fetchone()
        return row

    async def fetchall(self, sql: LiteralString, params: Params = ()) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = await (await self._cursor(sql, params)).fetchall()
        return rows

    async def fetchval(self, sql: LiteralString, params: Params = ()) -> Any:
        """The first column of the first row (``None`` without a row)."""
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]

    async def fetch_each(
        self, statements: Sequence[tuple[LiteralString, Params]]
    ) -> list[list[tuple[Any, ...]]]:
        """Run the statements in order, sent in one round trip; the rows of each."""
        async with self._sending(), self._connection.pipeline():
            cursors = [await self._connection.execute(sql, params or None) for sql, params
                       in statements]  # fmt: skip
        return [await cursor.fetchall() for cursor in cursors]

    async def set_local(self, settings: StatementSettings) -> None:
        """Set ``settings`` until the transaction ends (``SET LOCAL``)."""
        for name, value in settings:
            await self.execute("SELECT set_config(%s, %s, true)", (name, value))

    @asynccontextmanager
    async def pipeline(self, *, commit: bool = False) -> AsyncIterator[None]:
        """Send the statements run inside in one round trip (libpq's pipeline mode): for
        writes whose results are not read (their ``execute`` counts are not meaningful
        there); an error in any surfaces when the block ends, and fails the transaction.
        With ``commit``, ``COMMIT`` goes out with them and ends the transaction: nothing
        may be run in it afterwards."""
        async with self._sending(), self._connection.pipeline():
            yield
            if commit:
                self.commit_sent = True
                await self._connection.execute("COMMIT")


class Database:
    """A pool of connections to the catalogue database; see the module docstring."""

    def __init__(
        self,
        pool: AsyncConnectionPool[AsyncConnection[Any]],
        conninfo: str,
        kwargs: dict[str, Any],
        settings: DatabaseSettings,
        observe: Observe | None,
    ) -> None:
        self._pool = pool
        self._conninfo = conninfo
        self._kwargs = kwargs
        self.settings = settings
        self.name = describe_url(conninfo)
        """The URL without its password, as error messages name the database."""
        self._observe = observe
        self._variants: dict[
            StatementSettings, asyncio.Future[AsyncConnectionPool[AsyncConnection[Any]]]
        ] = {}
        """Pools whose sessions carry settings of :meth:`statement`'s, by those settings."""

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        node_id: str | None = None,
        settings: DatabaseSettings | None = None,
        observe: Observe | None = None,
    ) -> Database:
        """Connect (one probe connection, then the pool); ``DatabaseError`` with the server's
        reason when it cannot, within ``settings.connect_timeout`` per attempt."""
        settings = settings or DatabaseSettings()
        kwargs = _connection_kwargs(settings, node_id)
        name = describe_url(url)
        start = time.monotonic()
        await _probe(url, kwargs, settings.connect_timeout, name)
        pool_name = f"wharf-{node_id}" if node_id else "wharf"
        pool = await _open_pool(
            url, kwargs, settings, settings.min_connections, settings.max_connections, name,
            pool_name,
        )  # fmt: skip
        if observe is not None:
            observe("connect", time.monotonic() - start)
        return cls(pool, url, kwargs, settings, observe)

    async def close(self) -> None:
        variants, self._variants = self._variants, {}
        for opening in variants.values():
            try:
                pool = await opening
            except Exception:  # noqa: S112 - a pool that never opened has nothing to close
                continue
            await pool.close()
        await self._pool.close()

    async def _pool_for(
        self, settings: StatementSettings
    ) -> AsyncConnectionPool[AsyncConnection[Any]]:
        """The pool whose sessions run with ``settings`` (opened at its first use)."""
        if not settings:
            return self._pool
        opening = self._variants.get(settings)
        if opening is None:
            opening = asyncio.ensure_future(self._open_variant(settings))
            self._variants[settings] = opening
        try:
            return await asyncio.shield(opening)
        except DatabaseError as exc:  # nothing was sent: the next statement tries again
            if self._variants.get(settings) is opening:
                del self._variants[settings]
            raise DatabaseError(self.name, exc.reason, retriable=True) from exc

    async def _open_variant(
        self, settings: StatementSettings
    ) -> AsyncConnectionPool[AsyncConnection[Any]]:
        options = " ".join(f"-c {name}={value}" for name, value in settings)
        kwargs = {**self._kwargs, "options": f"{self._kwargs['options']} {options}"}
        size = max(1, self.settings.max_connections // 2)
        pool_name = f"{self._pool.name} {options}"
        return await _open_pool(
            self._conninfo, kwargs, self.settings, 1, size, self.name, pool_name
        )

    async def open_listener(self) -> AsyncConnection[Any]:
        """A connection of its own, outside the pool, with the pool's settings and name
        (autocommit): for ``LISTEN``, which must keep one session. The caller closes it.
        ``DatabaseError`` (retriable) with the server's reason when it cannot connect."""
        import psycopg

        limit = self.settings.connect_timeout
        try:
            async with asyncio.timeout(limit):
                return await psycopg.AsyncConnection.connect(self._conninfo, **self._kwargs)
        except TimeoutError as exc:
            raise DatabaseError(
                self.name, f"cannot connect: no answer within {limit:g} s", retriable=True
            ) from exc
        except psycopg.Error as exc:
            raise DatabaseError(
                self.name, f"cannot connect: {_libpq_reason(str(exc))}", retriable=True
            ) from exc

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @asynccontextmanager
    async def transaction(
        self,
        name: str = "transaction",
        *,
        isolation: str = "read committed",
        time_limit: float | None = None,
        lazy_begin: bool = False,
    ) -> AsyncIterator[Transaction]:
        """One transaction, committed when the body returns and rolled back when it raises.
        ``isolation``: "read committed", "repeatable read" or "serializable". ``time_limit``
        (default ``settings.transaction_timeout``) bounds ``BEGIN`` and, separately, the body
        with the commit; waiting for a connection has ``settings.acquire_timeout``. With
        ``lazy_begin``, ``BEGIN`` goes out with the body's first statements, one round trip
        fewer; a connection found broken then fails the transaction with
        ``stale_connection`` (nothing ran), which :meth:`run` tries again at once."""
        if isolation not in _ISOLATION_LEVELS:
            raise ValueError(f"unknown isolation level {isolation!r}")
        limit = self.settings.transaction_timeout if time_limit is None else time_limit
        stage = "begin"
        tx: Transaction | None = None

        def current() -> str:
            if tx is not None and tx.commit_sent:
                return "commit"  # also when the BEGIN went out with it
            if tx is not None and tx.opening:
                return "opening"
            return stage

        async with self._accounted(name, current):
            if lazy_begin:
                connection = await self._connection()
            else:
                connection = await self._begin(_begin_statement(isolation), limit)
            try:
                deadline = asyncio.timeout(limit)
                try:
                    async with deadline:
                        stage = "body"
                        tx = Transaction(connection, _begin_statement(isolation) if lazy_begin
                                         else None)  # fmt: skip
                        try:
                            yield tx
                        finally:
                            if tx.commit_sent:
                                stage = "commit"
                        if tx.opening:  # the body sent nothing: there is nothing to commit
                            return
                        if not tx.commit_sent:
                            stage = "commit"
                            await connection.execute("COMMIT")
                except TimeoutError as exc:
                    if not deadline.expired():
                        raise
                    raise self._timeout_error(stage, limit) from exc
            finally:
                await self._release(connection)

    async def run(
        self,
        body: Callable[[Transaction], Awaitable[T]],
        name: str = "transaction",
        *,
        retries: int = 0,
        isolation: str = "read committed",
        time_limit: float | None = None,
        lazy_begin: bool = False,
    ) -> T:
        """``body`` in a transaction; run again, up to ``retries`` more times, after a
        retriable failure (see :class:`DatabaseError`), and at once, up to the pool's size,
        after a broken connection found by a ``lazy_begin`` (see :meth:`transaction`). The
        body must be safe to run again: it should only talk to the database."""

        async def once() -> T:
            async with self.transaction(
                name, isolation=isolation, time_limit=time_limit, lazy_begin=lazy_begin
            ) as tx:
                return await body(tx)

        return await _with_retries(once, retries, stale=self.settings.max_connections)

    async def statement(
        self,
        sql: LiteralString,
        params: Params,
        name: str = "statement",
        *,
        settings: StatementSettings = (),
        retries: int = 0,
        read_only: bool = False,
    ) -> list[tuple[Any, ...]]:
        """One statement, a transaction of its own (read committed), sent alone: one round
        trip; its rows, read in binary (``bytea`` as ``bytes``). With ``settings``, it runs on
        a connection of a pool of their own, whose sessions carry them (its size is half the
        main pool's): the statement needs no ``SET LOCAL``, nor the ``BEGIN`` and ``COMMIT``
        around it, and no other statement sees them. It is sent on a connection whose
        session is not known to be gone; every failure counts as one of the commit: a
        connection lost leaves the outcome unknown, which only a ``read_only`` statement
        retries. Retried like :meth:`run` bodies."""
        return await _with_retries(
            lambda: self._statement(sql, params, name, settings), retries, unknown_too=read_only
        )

    async def _statement(
        self, sql: LiteralString, params: Params, name: str, settings: StatementSettings
    ) -> list[tuple[Any, ...]]:
        limit = self.settings.transaction_timeout
        async with self._accounted(name, lambda: "commit"):
            pool = await self._pool_for(settings)
            connection = await self._live_connection(pool)
            try:
                async with asyncio.timeout(limit):
                    cursor = await connection.execute(sql, params, binary=True)
                    if cursor.description is None:  # a statement that returns no rows
                        return []
                    rows: list[tuple[Any, ...]] = await cursor.fetchall()
                    return rows
            except TimeoutError as exc:
                raise self._timeout_error("commit", limit) from exc
            finally:
                await self._release(connection, pool)

    @asynccontextmanager
    async def _accounted(self, name: str, stage: Callable[[], str]) -> AsyncIterator[None]:
        """Driver errors raised inside as :class:`DatabaseError` (judged by the ``stage()``
        reached when they were raised), and the time spent given to ``observe`` as ``name``."""
        start = time.monotonic()
        try:
            yield
        except Exception as exc:
            translated = self._translate(exc, stage())
            if translated is None:
                raise
            raise translated from exc
        finally:
            if self._observe is not None:
                self._observe(name, time.monotonic() - start)

    async def _connection(
        self, pool: AsyncConnectionPool[AsyncConnection[Any]] | None = None
    ) -> AsyncConnection[Any]:
        """A connection of ``pool`` (the main one by default), waiting at most
        ``settings.acquire_timeout``."""
        from psycopg_pool import PoolTimeout

        pool = pool or self._pool
        try:
            return await pool.getconn(timeout=self.settings.acquire_timeout)
        except PoolTimeout as exc:
            raise await self._unavailable(pool) from exc

    async def _live_connection(
        self, pool: AsyncConnectionPool[AsyncConnection[Any]]
    ) -> AsyncConnection[Any]:
        """A pooled connection whose session was not ended while it sat in the pool: an idle
        session is sent nothing by the server, so anything readable on its socket (a
        termination notice, the end of the stream) means the session is gone. Such a
        connection is closed, and the pool replaces it; up to the pool's size are tried."""
        for _ in range(pool.max_size):
            connection = await self._connection(pool)
            if not _readable(connection.pgconn.socket):
                return connection
            await connection.close()
            await pool.putconn(connection)
        return await self._connection(pool)

    async def _begin(self, begin: LiteralString, limit: float) -> AsyncConnection[Any]:
        """A pooled connection inside ``begin``. A connection that fails to begin is broken
        (nothing was sent that could commit): the pool replaces it and another is tried, up to
        the pool's size."""
        import psycopg

        broken = 0
        while True:
            connection = await self._connection()
            try:
                async with asyncio.timeout(limit):
                    await connection.execute(begin)
            except TimeoutError as exc:
                await self._pool.putconn(connection)
                raise DatabaseError(
                    self.name, f"BEGIN timed out after {limit:g} s", retriable=True
                ) from exc
            except psycopg.OperationalError:
                await self._pool.putconn(connection)
                broken += 1
                if broken > self.settings.max_connections:
                    raise
                continue
            except BaseException:
                await self._pool.putconn(connection)
                raise
            return connection

    async def _release(
        self,
        connection: AsyncConnection[Any],
        pool: AsyncConnectionPool[AsyncConnection[Any]] | None = None,
    ) -> None:
        """Roll back what the body left open (when it raised), then return the connection
        to ``pool`` (the main one by default), which closes it if it is broken or still
        busy."""
        from psycopg import pq

        status = connection.pgconn.transaction_status
        if status in (pq.TransactionStatus.INTRANS, pq.TransactionStatus.INERROR):
            try:
                await connection.execute("ROLLBACK")
            except Exception:  # noqa: S110 - the pool discards a connection it cannot reset
                pass
        await (pool or self._pool).putconn(connection)

    async def _unavailable(
        self, pool: AsyncConnectionPool[AsyncConnection[Any]]
    ) -> DatabaseError:
        """No pooled connection in time: ask the server directly why (refused, wrong
        password...), or say the pool is exhausted if it answers."""
        try:
            await _probe(self._conninfo, self._kwargs, self.settings.connect_timeout, self.name)
        except DatabaseError as exc:
            return DatabaseError(self.name, exc.reason, retriable=True)
        return DatabaseError(
            self.name,
            f"no free connection within {self.settings.acquire_timeout:g} s "
            f"(all {pool.max_size} in use)",
            retriable=True,
        )

    def _timeout_error(self, stage: str, limit: float) -> DatabaseError:
        if stage == "commit":
            return DatabaseError(
                self.name,
                f"timed out after {limit:g} s while committing: the outcome is unknown",
                outcome_unknown=True,
            )
        return DatabaseError(self.name, f"transaction timed out after {limit:g} s")

    def _translate(self, exc: Exception, stage: str) -> DatabaseError | None:
        """The ``DatabaseError`` for a driver error (``None`` for anything else: our own
        errors and the caller's pass through unchanged)."""
        import psycopg

        if not isinstance(exc, psycopg.Error):
            return None
        state = exc.sqlstate
        reason = _first_line(str(exc)) or type(exc).__name__
        if state in _CONFLICT_STATES:
            return DatabaseError(self.name, f"{_CONFLICT_STATES[state]}: {reason}", retriable=True)
        lost = isinstance(exc, psycopg.OperationalError) and (
            state is None or state.startswith(("08", "57P"))
        )
        if stage == "opening" and lost:
            return DatabaseError(
                self.name, f"connection lost: {reason}", retriable=True, stale_connection=True
            )
        if stage == "commit" and (lost or state is None):
            return DatabaseError(
                self.name,
                f"connection lost while committing ({reason}): the outcome is unknown",
                outcome_unknown=True,
            )
        if isinstance(exc, psycopg.errors.QueryCanceled):
            return DatabaseError(self.name, f"statement timed out: {reason}")
        if lost:
            return DatabaseError(self.name, f"connection lost: {reason}", retriable=True)
        return DatabaseError(self.name, f"{reason} (SQLSTATE {state})")


async def _with_retries(
    once: Callable[[], Awaitable[T]], retries: int, *, unknown_too: bool = False, stale: int = 0
) -> T:
    """``once()``, run again up to ``retries`` more times after a retriable failure (and,
    with ``unknown_too``, one of unknown outcome), sleeping a jittered backoff in between;
    and at once, up to ``stale`` times, after a stale connection."""
    attempt = 0
    while True:
        try:
            return await once()
        except DatabaseError as exc:
            if exc.stale_connection and stale > 0:
                stale -= 1
                continue
            again = exc.retriable or (unknown_too and exc.outcome_unknown)
            if not again or attempt >= retries:
                raise
        attempt += 1
        cap = min(_BACKOFF_CAP_S, _BACKOFF_BASE_S * 2**attempt)
        await asyncio.sleep(random.uniform(0, cap))


def _readable(fd: int) -> bool:
    """Whether ``fd`` has something to read now (data or its end)."""
    ready, _, _ = select.select([fd], [], [], 0)
    return bool(ready)


def _begin_statement(isolation: str) -> LiteralString:
    if isolation == "repeatable read":
        return "BEGIN ISOLATION LEVEL REPEATABLE READ"
    if isolation == "serializable":
        return "BEGIN ISOLATION LEVEL SERIALIZABLE"
    return "BEGIN"


def describe_url(url: str) -> str:
    """``postgresql://user@host:port/dbname`` for a URL or conninfo string: never the
    password."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(url)
    except Exception:
        return "<unparsable database URL>"
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = parts.get("host") or "localhost"
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{host}{port}/{parts.get('dbname') or ''}"


async def _open_pool(
    url: str,
    kwargs: dict[str, Any],
    settings: DatabaseSettings,
    min_size: int,
    max_size: int,
    name: str,
    pool_name: str,
) -> AsyncConnectionPool[AsyncConnection[Any]]:
    """An open pool; ``name`` names the database in errors, ``pool_name`` the pool in the
    driver's logs."""
    from psycopg_pool import AsyncConnectionPool

    pool: AsyncConnectionPool[AsyncConnection[Any]] = AsyncConnectionPool(
        url,
        kwargs=kwargs,
        min_size=min_size,
        max_size=max_size,
        open=False,
        name=pool_name,
        timeout=settings.acquire_timeout,
        # A lost connection is replaced in the background with a doubling delay; giving up
        # after acquire_timeout keeps that delay short, and a waiting caller starts anew.
        reconnect_timeout=settings.acquire_timeout,
    )
    try:
        await pool.open(wait=True, timeout=settings.connect_timeout * 2)
    except Exception as exc:
        await pool.close()
        raise DatabaseError(name, f"cannot open the connection pool: {exc}") from exc
    return pool


def _connection_kwargs(settings: DatabaseSettings, node_id: str | None) -> dict[str, Any]:
    options = (
        f"-c statement_timeout={_ms(settings.statement_timeout)} "
        f"-c idle_in_transaction_session_timeout={_ms(settings.idle_in_transaction_timeout)} "
        # a broker's statements are short: parallel workers and JIT compilation would only add
        # their start-up (JIT took 9-35 ms for an ack's delete that runs in 0.1 ms, whenever
        # a table's missing statistics made its plan look expensive)
        "-c max_parallel_workers_per_gather=0 -c jit=off"
    )
    return {
        "autocommit": True,
        "application_name": (f"wharf {node_id}" if node_id else "wharf")[:63],
        "connect_timeout": max(2, math.ceil(settings.connect_timeout)),
        "options": options,
        "keepalives": 1,
        "keepalives_idle": 5,
        "keepalives_interval": 2,
        "keepalives_count": 3,
        "tcp_user_timeout": _ms(settings.tcp_user_timeout),
    }


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


async def _probe(url: str, kwargs: dict[str, Any], limit: float, name: str) -> None:
    """Open and close one connection; ``DatabaseError`` with the reason when it fails."""
    import psycopg

    try:
        async with asyncio.timeout(limit):
            connection = await psycopg.AsyncConnection.connect(url, **kwargs)
            await connection.close()
    except TimeoutError as exc:
        raise DatabaseError(name, f"cannot connect: no answer within {limit:g} s") from exc
    except psycopg.Error as exc:
        raise DatabaseError(name, f"cannot connect: {_libpq_reason(str(exc))}") from exc


def _libpq_reason(message: str) -> str:
    """The cause in a libpq connection error: 'connection failed: connection to server at
    "h", port 5432 failed: FATAL:  password authentication failed for user "u"' says
    'password authentication failed for user "u"'."""
    line = _first_line(message)
    cause = line.rsplit(" failed: ", 1)[-1]
    return cause.removeprefix("FATAL:").strip() or line


def _first_line(text: str) -> str:
    return text.strip().split("\n", 1)[0].strip()
