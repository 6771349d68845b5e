"""Engines and the few places where SQLite and PostgreSQL differ, behind one helper each."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Engine, Table, create_engine, event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError

from kinloop.domain.errors import InvalidInput

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: SQLite's own busy wait alone
    fcntl = None  # type: ignore[assignment]

DEFAULT_URL = "sqlite:///kinloop.db"


def database_url(given: str | None) -> str:
    """`--db`, else `KINLOOP_DATABASE_URL`, else a SQLite file in the working directory."""
    url = given or os.environ.get("KINLOOP_DATABASE_URL") or DEFAULT_URL
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def connect(url: str | None = None, *, wal_autocheckpoint: bool = True, **kwargs: Any) -> Engine:
    """An engine for the URL; SQLite gets WAL, foreign keys and `BEGIN IMMEDIATE`.

    With `wal_autocheckpoint=False`, SQLite's commits never checkpoint the WAL themselves: the
    caller runs a `Checkpointer`."""
    url = database_url(url)
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidInput(f"not a database URL: {url!r}", field="db") from exc
    if parsed.get_backend_name() == "sqlite":
        if fcntl is not None and parsed.database not in (None, "", ":memory:") and "uri" not in parsed.query:
            connect_args = kwargs.setdefault("connect_args", {})
            connect_args["factory"] = _writer_locking(os.path.abspath(f"{parsed.database}-writer.lock"))
        engine = create_engine(url, **kwargs)
        _configure_sqlite(engine, autocheckpoint=wal_autocheckpoint)
        return engine
    if parsed.get_backend_name() != "postgresql":
        raise InvalidInput(f"unsupported database {parsed.get_backend_name()!r}: use sqlite or postgresql", field="db")
    return create_engine(url, pool_pre_ping=True, **kwargs)


def _configure_sqlite(engine: Engine, *, autocheckpoint: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when transactions begin (see "begin" below).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        if not autocheckpoint:
            cur.execute("PRAGMA wal_autocheckpoint=0")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front: a deferred transaction that reads and then
        # writes can fail with "database is locked" when another writer got there in between.
        # Readers (see `readonly`) begin deferred; in WAL mode they never wait for writers.
        driver = conn.connection.driver_connection
        assert driver is not None  # a connection that begins holds one
        if conn.get_execution_options().get("kinloop_readonly"):
            # Straight to the driver: through SQLAlchemy this BEGIN cost a tenth of a member
            # read, and a deferred BEGIN cannot fail (a writer's may: SQLAlchemy wraps its error).
            driver.execute("BEGIN")
        else:
            if isinstance(driver, _WriterLocking):
                # Let go of at commit or rollback; a failed BEGIN is rolled back by SQLAlchemy.
                driver.take_writer_lock()
            conn.exec_driver_sql("BEGIN IMMEDIATE")


class _WriterLocking(sqlite3.Connection):
    """A SQLite connection that queues for the write lock on a lock file before BEGIN IMMEDIATE.

    SQLite's own wait for its write lock (the busy handler) sleeps and tries again, 1 ms at
    first, then up to 100 ms between tries, so a writer of another process (a second
    `kinloop serve` worker, a `kinloop ingest`) waited up to a whole sleep after the lock was
    free: with two API workers on one file the event p99 was 90-240 ms. An exclusive `flock`
    on `<database>-writer.lock` is handed over by the kernel the moment its holder lets go.
    It only shortens the wait: SQLite's lock still decides (a writer that does not take this
    one, such as the sqlite3 shell, is waited for as before), so correctness never rests on it.
    Held from BEGIN IMMEDIATE to the end of the transaction (commit, rollback or close)."""

    lock_path = ""  # set on each engine's subclass (`_writer_locking`)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lock_fd: int | None = None
        self._locked = False

    def take_writer_lock(self, *, wait: bool = True) -> bool:
        """Hold the lock: wait (without the GIL) until no other kinloop connection writes to this
        database, or with `wait=False` take it only if it is free now. Whether it is held."""
        if self._locked:
            return True
        if self._lock_fd is None:
            self._lock_fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        self._locked = True
        return True

    def let_go(self) -> None:
        """Release the lock file if this connection holds it."""
        if self._locked and self._lock_fd is not None:
            self._locked = False
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.let_go()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.let_go()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.let_go()
            if self._lock_fd is not None:
                os.close(self._lock_fd)
                self._lock_fd = None


def writer_lock_now(conn: Connection) -> bool:
    """Take the writer lock for `conn`'s coming write transaction if it is free now (True), or
    say another connection holds it (False); True where the database has no such lock."""
    driver = conn.connection.driver_connection
    return not isinstance(driver, _WriterLocking) or driver.take_writer_lock(wait=False)


def _writer_locking(lock_path: str) -> type[_WriterLocking]:
    """The connection class for one database file."""
    return type("WriterLocking", (_WriterLocking,), {"lock_path": lock_path})


class Checkpointer:
    """Checkpoints a SQLite database's WAL in a thread of its own, for an engine whose commits
    do not (`connect(..., wal_autocheckpoint=False)`).

    SQLite's automatic checkpoint runs inside the commit that crosses 1,000 pages of WAL: under
    a steady stream of single events, every few hundred commits one waited for the copying and
    the fsync, and the replies waiting on it made the API's event p99 twice its p50 and more.
    Here a commit only asks (`committed`); at most one checkpoint runs at a time, at most one
    every `every` seconds, and PASSIVE, so it never waits for a reader or blocks a writer. A
    burst's last second of WAL waits for the next commit, or the last connection's close."""

    def __init__(self, engine: Engine, every: float = 1.0) -> None:
        self.engine = engine
        self.every = every
        self.lock = threading.Lock()
        self.last = time.monotonic()
        self.thread: threading.Thread | None = None
        self.runs = 0

    def committed(self) -> None:
        """Something was committed: checkpoint soon, unless one runs or ran just now."""
        now = time.monotonic()
        with self.lock:
            if (self.thread is not None and self.thread.is_alive()) or now - self.last < self.every:
                return
            self.last = now
            self.thread = threading.Thread(target=self._run, name="kinloop-checkpoint", daemon=True)
            self.thread.start()

    def _run(self) -> None:
        try:
            with self.engine.connect() as conn:
                driver = conn.connection.driver_connection
                assert driver is not None  # a pool's connection holds one
                driver.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            pass  # (a database gone, a disk full) the next commit asks again; SQLite's data is safe in the WAL
        finally:
            with self.lock:
                self.runs += 1


def readonly(engine: Engine) -> Engine:
    """The same engine (and pool) for transactions that only read."""
    return engine.execution_options(kinloop_readonly=True)


def autocommit_reads(engine: Engine) -> Engine:
    """The same engine (and pool) for reads of one statement each, outside any transaction:
    what one statement reads is consistent, and each statement sees its own moment.

    `driver_cursor` opens no transaction on it (on SQLite, BEGIN and COMMIT through
    SQLAlchemy were 7% of a member read); SQLAlchemy's own statements still begin one, which
    the caller commits. On PostgreSQL the driver is in autocommit too (BEGIN and COMMIT
    would be round trips)."""
    if engine.dialect.name == "sqlite":
        return readonly(engine).execution_options(kinloop_autocommit=True)
    return engine.execution_options(isolation_level="AUTOCOMMIT", kinloop_autocommit=True)


def is_sqlite(conn: Connection) -> bool:
    return conn.dialect.name == "sqlite"


@contextmanager
def driver_cursor(conn: Connection, sql: str) -> Iterator[Any]:
    """A cursor of the driver's connection, in the caller's (SQLAlchemy) transaction (begun
    here if none is open, except on an `autocommit_reads` connection), for one statement
    (`sql`; an executemany or a COPY counts as one)."""
    if not conn.in_transaction() and not conn.get_execution_options().get("kinloop_autocommit"):
        conn.begin()  # what SQLAlchemy's autobegin would do before its own first statement
    driver = conn.connection.driver_connection
    assert driver is not None  # an open Connection holds one
    error = conn.dialect.loaded_dbapi.Error
    cur = driver.cursor()
    if conn._has_events or conn.engine._has_events:
        # Statement listeners (`StatementCounter`, tracing) see these statements too, as if
        # SQLAlchemy had run them; the parameters are not shown to them.
        conn.dispatch.before_cursor_execute(conn, cur, sql, None, None, False)
    try:
        yield cur
    except error as exc:
        raise DBAPIError.instance(sql, None, exc, error, dialect=conn.dialect) from exc
    finally:
        cur.close()


class StatementCounter:
    """Counts the statements an engine sends (SQLAlchemy's and `driver_cursor`'s), for tests
    and benchmarks: each is a round trip to PostgreSQL. Use as a context manager."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements: list[str] = []

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements.append(statement)

    @property
    def count(self) -> int:
        return len(self.statements)

    def __enter__(self) -> StatementCounter:
        event.listen(self.engine, "before_cursor_execute", self._seen)
        return self

    def __exit__(self, *_exc: object) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


def reserve_ids(conn: Connection, table: Table, n: int, *, above: int = 0) -> list[int]:
    """Allocate `n` primary keys before inserting, so rows can reference each other in bulk.

    `above` is the highest id this transaction already reserved and has not inserted yet.
    """
    if n == 0:
        return []
    column, rest, params = reserve_ids_sql(conn, table, n)
    sql = f"SELECT {column} {rest}"
    with driver_cursor(conn, sql) as cur:
        cur.execute(sql, params)
        return reserved_ids(conn, cur.fetchone()[0], n, above=above)


def reserve_ids_sql(conn: Connection, table: Table, n: int) -> tuple[str, str, tuple[Any, ...]]:
    """`reserve_ids` as the (column, rest of query, parameters) of a read to join with others;
    its one row's value goes to `reserved_ids`."""
    if is_sqlite(conn):
        # The highest id: safe because the transaction holds SQLite's single write lock
        # (BEGIN IMMEDIATE). On PostgreSQL one row holds all the ids: fetching n rows costs
        # more than drawing n values.
        return "max(id)", f"FROM {table.name}", ()
    # The sequence as a constant: `pg_get_serial_sequence` in the call was looked up again for
    # every id drawn (9 ms for 2,000 ids instead of 1 ms).
    return f"array_agg(nextval('{serial_sequence(table)}'::regclass))", "FROM generate_series(1, %s)", (n,)


def serial_sequence(table: Table) -> str:
    """The name PostgreSQL gave the sequence of `table`'s serial `id` (found via search_path)."""
    return f"{table.name}_id_seq"


def reserved_ids(conn: Connection, value: Any, n: int, *, above: int = 0) -> list[int]:
    """The ids a `reserve_ids_sql` read reserved, from its value."""
    if n == 0:
        return []
    if is_sqlite(conn):
        start = max(value or 0, above) + 1
        return list(range(start, start + n))
    return list(value)[:n]


def upsert(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], keys: Iterable[str]) -> None:
    """Insert rows, or overwrite the non-key columns of rows that already exist."""
    if not rows:
        return
    key_cols = list(keys)
    dialect_insert = sqlite.insert if is_sqlite(conn) else postgresql.insert
    stmt = dialect_insert(table)
    updates = {c: stmt.excluded[c] for c in rows[0] if c not in key_cols}
    conn.execute(stmt.on_conflict_do_update(index_elements=key_cols, set_=updates), list(rows))


def insert_ignore(conn: Connection, table: Table, rows: Sequence[dict[str, Any]], keys: Iterable[str]) -> None:
    """Insert rows that do not exist yet (by the unique `keys`), leaving existing ones alone."""
    if not rows:
        return
    dialect_insert = sqlite.insert if is_sqlite(conn) else postgresql.insert
    stmt = dialect_insert(table).on_conflict_do_nothing(index_elements=list(keys))
    conn.execute(stmt, list(rows))
