"""`kinloop bench dashboard` at a small size: the store it builds is a valid ledger, and the
figures come out with the keys the README quotes."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from kinloop.bench_dashboard import build, run_dashboard_bench
from kinloop.cli.app import app
from kinloop.clock import utcnow
from kinloop.services import programs, verify
from kinloop.store import migrate
from kinloop.store.db import connect


def test_the_built_store_passes_verify(tmp_path: Path) -> None:
    engine = connect(f"sqlite:///{tmp_path / 'bench.db'}")
    migrate.upgrade(engine)
    built = build(engine, members=200, entries=5000, now=utcnow())
    assert built["entries"] >= 5000
    with engine.connect() as conn:
        report = verify.verify(conn, programs.active(conn))
    assert report.ok, report.mismatches[:5]
    assert report.entries == built["entries"]
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
