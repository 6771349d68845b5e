"""The API's SQLite WAL is checkpointed by a `Checkpointer`, not inside commits."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, text

from kinloop.store.db import Checkpointer, connect

ROWS = 3000  # about 1,500 pages of WAL: past SQLite's automatic checkpoint (1,000 pages)


def _fill(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
    for _ in range(0, ROWS, 100):  # many commits, as a stream of posts makes
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO t (v) VALUES (:v)"), [{"v": "x" * 2000} for _ in range(100)])


def test_without_autocheckpoint_commits_leave_the_database_file_alone(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    engine = connect(f"sqlite:///{db}", wal_autocheckpoint=False)
    _fill(engine)
    assert db.stat().st_size < 100_000  # everything is still in the WAL
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar() == 0
    engine.dispose()


def test_the_default_engine_still_checkpoints_in_its_commits(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    engine = connect(f"sqlite:///{db}")
    _fill(engine)
    assert db.stat().st_size > 2_000_000
    engine.dispose()


def test_a_commit_asks_and_the_checkpointer_copies_the_wal_into_the_database(tmp_path: Path) -> None:
    db = tmp_path / "k.db"
    engine = connect(f"sqlite:///{db}", wal_autocheckpoint=False)
    _fill(engine)
    checkpoints = Checkpointer(engine, every=0.0)
    checkpoints.committed()
    assert checkpoints.thread is not None
    checkpoints.thread.join(30)
    assert checkpoints.runs == 1
    assert db.stat().st_size > 2_000_000
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM t").scalar() == ROWS
    engine.dispose()


def test_at_most_one_checkpoint_a_period(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path / 'k.db'}", wal_autocheckpoint=False)
    _fill(engine)
    checkpoints = Checkpointer(engine, every=3600.0)
    checkpoints.committed()  # the period starts when the checkpointer does
    assert checkpoints.thread is None
    checkpoints.last -= 3600.0
    for _ in range(50):
        checkpoints.committed()
    assert checkpoints.thread is not None
    checkpoints.thread.join(30)
    assert checkpoints.runs == 1
    engine.dispose()
