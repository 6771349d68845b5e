"""SQLite writers queue for `<database>-writer.lock` (a kernel lock handed over the moment it is
let go) before SQLite's own write lock, whose busy wait sleeps up to 100 ms between tries."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.exc import OperationalError

from kinloop.store.db import connect, readonly


@pytest.fixture
def db(tmp_path: Path) -> Iterator[tuple[Engine, Path]]:
    engine = connect(f"sqlite:///{tmp_path / 'k.db'}")
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (v INTEGER)"))
    yield engine, tmp_path / "k.db-writer.lock"
    engine.dispose()


def held(lock: Path) -> bool:
    """Whether some connection holds the lock file (tried from an open file of our own)."""
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def test_a_write_transaction_holds_the_lock_until_it_commits(db: tuple[Engine, Path]) -> None:
    engine, lock = db
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO t VALUES (1)"))
        assert held(lock)
    assert not held(lock)


def test_rollback_and_close_let_go_of_it(db: tuple[Engine, Path]) -> None:
    engine, lock = db

    def fail_midway() -> None:
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t VALUES (1)"))
            raise RuntimeError

    with pytest.raises(RuntimeError):
        fail_midway()
    assert not held(lock)
    conn = engine.connect()
    conn.execute(text("INSERT INTO t VALUES (2)"))
    assert held(lock)
    conn.close()  # back to the pool, rolled back
    assert not held(lock)
    engine.dispose()  # the driver's connections closed too
    assert not held(lock)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 0


def test_readers_do_not_take_it(db: tuple[Engine, Path]) -> None:
    engine, lock = db
    with readonly(engine).begin() as conn:
        conn.execute(text("SELECT count(*) FROM t")).scalar()
        assert not held(lock)


def test_a_second_writer_waits_for_the_first_then_goes_on(db: tuple[Engine, Path], tmp_path: Path) -> None:
    engine, _ = db
    other = connect(f"sqlite:///{tmp_path / 'k.db'}")  # another engine: as another process would
    order: list[str] = []
    first = engine.connect()
    first.execute(text("INSERT INTO t VALUES (1)"))

    def second() -> None:
        with other.begin() as conn:
            order.append("second began")
            conn.execute(text("INSERT INTO t VALUES (2)"))

    thread = threading.Thread(target=second)
    thread.start()
    thread.join(0.3)
    assert order == []  # still waiting
    order.append("first commits")
    first.commit()
    first.close()
    thread.join(10)
    assert order == ["first commits", "second began"]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM t")).scalar() == 2
    other.dispose()


def test_memory_databases_have_no_lock_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    engine = connect("sqlite://")
    with engine.begin() as conn:
        conn.execute(text("SELECT 1"))
    engine.dispose()
    assert list(tmp_path.iterdir()) == []


def test_a_begin_that_fails_lets_go_too(db: tuple[Engine, Path], tmp_path: Path) -> None:
    """A writer that does not take the lock file (the sqlite3 shell) holds SQLite's lock: ours
    is taken, BEGIN IMMEDIATE gives up, and the lock file must not stay taken."""
    engine, lock = db
    outsider = sqlite3.connect(tmp_path / "k.db", isolation_level=None)
    outsider.execute("BEGIN IMMEDIATE")
    conn = engine.connect()
    driver = conn.connection.driver_connection
    assert driver is not None
    driver.execute("PRAGMA busy_timeout=50")
    with pytest.raises(OperationalError, match="locked"):
        conn.execute(text("INSERT INTO t VALUES (1)"))
    assert not held(lock)
    conn.close()
    outsider.rollback()
    outsider.close()
    with engine.begin() as again:  # and the next writer goes on
        again.execute(text("INSERT INTO t VALUES (2)"))
