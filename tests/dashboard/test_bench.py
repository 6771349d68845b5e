"""`kinloop bench dashboard` at a small size: the store it builds is a valid ledger with all its
indexes and constraints back in force, and the figures come out with the keys the README quotes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from kinloop import bench_dashboard
from kinloop.bench import _engine_in
from kinloop.bench_dashboard import build, run_dashboard_bench
from kinloop.cli.app import app
from kinloop.clock import utcnow
from kinloop.services import programs, verify
from kinloop.store import migrate
from kinloop.store.db import connect


def test_the_built_store_passes_verify(engine: Engine) -> None:
    built = build(engine, members=200, entries=5000, now=utcnow())
    assert built["entries"] >= 5000
    with engine.connect() as conn:
        report = verify.verify(conn, programs.active(conn))
    assert report.ok, report.mismatches[:5]
    assert report.entries == built["entries"]


def schema(conn: Connection) -> set[tuple[Any, ...]]:
    """Every index and constraint of the store, as the database itself describes them."""
    if conn.dialect.name == "sqlite":
        return set(conn.execute(text("SELECT tbl_name, name, sql FROM sqlite_master WHERE type = 'index'")).all())
    indexes = conn.execute(text("SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"))
    constraints = conn.execute(
        text(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint"
            " WHERE connamespace = 'public'::regnamespace"
        )
    )
    return set(indexes.all()) | set(constraints.all())


def test_the_build_puts_back_every_index_and_constraint(engine: Engine) -> None:
    # The load runs without secondary indexes and (on PostgreSQL) without unique and foreign
    # keys, or (on SQLite) without foreign-key checks; afterwards the store is as migrated.
    with engine.connect() as conn:
        before = schema(conn)
    build(engine, members=50, entries=800, now=utcnow())
    with engine.connect() as conn:
        assert schema(conn) == before
        if conn.dialect.name == "sqlite":
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL, as `connect` sets
        else:
            assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(text("INSERT INTO balances (member_pk, currency, available, pending) VALUES (999999, 'x', 0, 0)"))


def test_a_broken_reference_fails_the_build(db_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Rows go in unchecked, so the checks at the end must catch what a bug would write. A
    # failed build leaves its store without indexes: on PostgreSQL it gets a schema of its own.
    balances = bench_dashboard._balances

    def and_a_stray_row(w: Any, people: Any, start: Any) -> None:
        balances(w, people, start)
        w.add("balances", ("member_pk", "currency", "available", "pending"), (999999, "beans", 1, 0))
        w.flush(("balances",))

    monkeypatch.setattr(bench_dashboard, "_balances", and_a_stray_row)
    engine = connect(db_url) if db_url.startswith("sqlite") else _engine_in(db_url, "kinloop_test_broken_build")
    try:
        migrate.upgrade(engine)
        with pytest.raises((RuntimeError, IntegrityError)):
            build(engine, members=20, entries=300, now=utcnow())
    finally:
        if not db_url.startswith("sqlite"):
            with engine.begin() as conn:
                conn.execute(text("DROP SCHEMA kinloop_test_broken_build CASCADE"))
        engine.dispose()


def test_the_bench_reports_its_figures() -> None:
    result = run_dashboard_bench(None, members=200, entries=5000, runs=2)
    for key in ("members", "entries", "refresh_s", "dashboard_ms", "dashboard_max_ms", "raw_ms", "ratio", "cold_ms"):
        assert key in result
    assert result["members"] == 200
    assert result["entries"] >= 5000
    assert result["rollup_rows"] > 0
    assert result["dashboard_max_ms"] >= result["dashboard_ms"] > 0


def test_stats_refresh_from_the_command_line(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    engine = connect(url)
    migrate.upgrade(engine)
    build(engine, members=50, entries=800, now=utcnow())
    engine.dispose()
    runner = CliRunner()
    first = runner.invoke(app, ["stats", "refresh", "--db", url])
    assert first.exit_code == 0, first.output
    assert "dash_bench: added" in first.output
    assert "entries" in first.output
    again = runner.invoke(app, ["stats", "refresh", "--db", url, "--json"])
    assert again.exit_code == 0, again.output
    assert '"entries": 0' in again.output  # nothing new the second time
