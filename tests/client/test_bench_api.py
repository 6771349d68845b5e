"""`kinloop bench api` with a tiny load: it serves, drives, reports and cleans up."""

from __future__ import annotations

import json

from sqlalchemy import text
from typer.testing import CliRunner

from kinloop.bench import API_SCHEMA, run_api_bench
from kinloop.cli.app import app
from kinloop.store.db import connect

KEYS = {
    "database",
    "workers",
    "concurrency",
    "events",
    "events_per_s",
    "event_p50_ms",
    "event_p99_ms",
    "reads",
    "reads_per_s",
    "read_p50_ms",
    "read_p99_ms",
    "ceiling_per_s",
    "ceiling_p50_ms",
    "ceiling_p99_ms",
    "events_ratio",
    "reads_ratio",
    "errors",
    "phases",
}


def test_run_api_bench(db_url: str) -> None:
    result = run_api_bench(db_url, events=50, reads=50, concurrency=4)
    assert result.keys() >= KEYS
    assert result["database"] == ("sqlite" if db_url.startswith("sqlite") else "postgresql")
    assert result["errors"] == 0, result["phases"]
    assert (result["events"], result["reads"]) == (50, 50)
    assert result["events_per_s"] > 0
    assert result["reads_per_s"] > 0
    assert 0 < result["event_p50_ms"] <= result["event_p99_ms"]
    assert result["phases"]["events"]["statuses"] == {"200": 50}
    if not db_url.startswith("sqlite"):  # its schema is gone, the rest of the database untouched
        engine = connect(db_url)
        with engine.connect() as conn:
            schemas = conn.execute(text("SELECT schema_name FROM information_schema.schemata")).scalars().all()
        engine.dispose()
        assert API_SCHEMA not in schemas


def test_cli_bench_api_json() -> None:
    out = CliRunner().invoke(app, ["bench", "api", "--json", "--events", "20", "--reads", "20", "--workers", "2"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)
    assert (result["database"], result["workers"], result["errors"]) == ("sqlite", 2, 0)
