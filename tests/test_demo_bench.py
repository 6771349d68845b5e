"""`kinloop demo` and `kinloop bench ingest` produce what they promise (small sizes)."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from rich.console import Console
from sqlalchemy import select
from typer.testing import CliRunner

from kinloop.bench import EXAMPLES, generate
from kinloop.cli.app import app
from kinloop.demo import run_demo
from kinloop.program.loader import parse_program
from kinloop.services import programs
from kinloop.services.verify import verify
from kinloop.store.db import connect
from kinloop.store.tables import members

runner = CliRunner()


def test_demo_builds_a_verified_program_and_prints_its_summary(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    result = runner.invoke(app, ["demo", "--db", url, "--members", "120", "--days", "20", "--no-serve"])
    assert result.exit_code == 0, result.output
    assert "members per tier" in result.output
    assert "Stars" in result.output
    assert "Beans" in result.output
    engine = connect(url)
    with engine.connect() as conn:
        loaded = programs.active(conn)
        report = verify(conn, loaded)
    assert loaded.program.key == "coffee"
    assert report.ok, report.mismatches
    assert report.members > 50
    assert report.entries > report.members


def test_demo_refuses_a_database_that_already_holds_a_program(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    assert runner.invoke(app, ["demo", "--db", url, "--members", "20", "--days", "2", "--no-serve"]).exit_code == 0
    again = runner.invoke(app, ["demo", "--db", url, "--members", "20", "--days", "2", "--no-serve"])
    assert again.exit_code == 2
    assert "already holds a program" in again.output


def test_bench_ingest_json_reports_the_figures_against_the_raw_ceiling() -> None:
    result = runner.invoke(app, ["bench", "ingest", "--events", "600", "--batch-size", "200", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["mode"] == "batched"
    assert figures["events"] == 600
    for key in ("events_per_s", "raw_rows_per_s", "rows_per_event", "ratio"):
        assert figures[key] > 0
    # Every event is written, and purchases write entries and lots besides.
    assert figures["rows_per_event"] > 1


def test_bench_ingest_growth_runs_the_same_events_with_every_growth_feature_on() -> None:
    result = runner.invoke(app, ["bench", "ingest", "--events", "600", "--batch-size", "200", "--growth", "--json"])
    assert result.exit_code == 0, result.output
    figures = json.loads(result.output)
    assert figures["growth_events_per_s"] > 0
    expected = figures["events_per_s"] and figures["growth_events_per_s"] / figures["events_per_s"]
    assert abs(figures["growth_ratio"] - expected) < 0.01


def test_the_growth_bench_program_is_the_bench_program_plus_growth_features() -> None:
    plain = parse_program((EXAMPLES / "bench.yaml").read_text(encoding="utf-8"))
    growth = parse_program((EXAMPLES / "bench_growth.yaml").read_text(encoding="utf-8"))
    # Same rules and event types: the ratio measures the growth features, nothing else.
    assert growth.rules == plain.rules
    assert growth.event_types == plain.event_types
    for section in ("checkin", "campaigns", "badges", "tasks", "privileges", "leaderboards"):
        assert getattr(growth, section), section
    assert growth.ladder is not None
    assert growth.ladder.window != "lifetime"


def test_bench_generator_is_deterministic_and_uses_every_event_type() -> None:
    first = list(generate(500, seed=3))
    assert first == list(generate(500, seed=3))
    assert {e["type"] for e in first} == {"purchase", "check_in", "review", "share", "referral", "profile_completed"}
    assert len({e["event_id"] for e in first}) == 500


@pytest.mark.parametrize("weekday", range(7))
@pytest.mark.parametrize("days", [1, 2])
def test_a_short_demo_works_whatever_the_day(tmp_path: Path, weekday: int, days: int) -> None:
    """Over a day or two not every member acts (fewer still at a weekend): the demo shows and
    serves only members that exist, on every day of the week."""
    now = datetime(2026, 12, 7, 12, tzinfo=UTC) + timedelta(days=weekday)  # a Monday, onwards
    quiet = Console(file=io.StringIO())
    shown = io.StringIO()
    summary = run_demo(
        f"sqlite:///{tmp_path / 'demo.db'}",
        members_n=20,
        days=days,
        seed=1,
        console=Console(file=shown, width=200),
        progress_console=quiet,
        clock=lambda: now,
    )
    assert summary["members"] >= 1
    engine = connect(f"sqlite:///{tmp_path / 'demo.db'}")
    with engine.connect() as conn:
        known = set(conn.execute(select(members.c.member_id)).scalars())
    engine.dispose()
    listed = {line.split(":")[0].strip() for line in shown.getvalue().splitlines() if line.startswith("  member-")}
    assert listed
    assert listed <= known
