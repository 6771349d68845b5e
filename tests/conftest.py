"""Shared fixtures: every `engine` test runs on SQLite and, when KINLOOP_TEST_POSTGRES_URL is
set (as in .ci/run), on a fresh PostgreSQL database too."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from kinloop.program.loader import parse_program
from kinloop.services import programs
from kinloop.services.programs import LoadedProgram
from kinloop.store import migrate
from kinloop.store.db import connect, database_url
from kinloop.store.tables import metadata

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
PG_URL = os.environ.get("KINLOOP_TEST_POSTGRES_URL")
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str | None]:
    """A PostgreSQL database of its own for this test session, dropped at the end."""
    if not PG_URL:
        yield None
        return
    admin = create_engine(database_url(PG_URL), isolation_level="AUTOCOMMIT")
    name = f"kinloop_test_{uuid.uuid4().hex[:10]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    base = database_url(PG_URL).rsplit("/", 1)[0]
    url = f"{base}/{name}"
    migrate.upgrade(connect(url))
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=[pytest.mark.postgres, pytest.mark.skipif(not PG_URL, reason="KINLOOP_TEST_POSTGRES_URL not set")],
    ),
]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path, pg_database: str | None) -> Iterator[str]:
    """A migrated, empty database URL (SQLite file, or the session's PostgreSQL database)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'kinloop.db'}"
        migrate.upgrade(connect(url))
        yield url
        return
    assert pg_database is not None
    yield pg_database
    engine = connect(pg_database)
    names = ", ".join(t.name for t in metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {names} RESTART IDENTITY CASCADE"))
    engine.dispose()


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = connect(db_url)
    yield eng
    eng.dispose()


def load_example(engine: Engine, name: str, now: datetime = NOW) -> LoadedProgram:
    """Load `examples/<name>.yaml` into the database and return its active version."""
    source = (EXAMPLES / f"{name}.yaml").read_text(encoding="utf-8")
    with engine.begin() as conn:
        return programs.load(conn, parse_program(source), source, now=now).loaded


@pytest.fixture
def coffee(engine: Engine) -> LoadedProgram:
    return load_example(engine, "coffee")


# Coffee with its check-in as a rule capped per day, as the file had it before the daily
# check-in feature. A rule's cap counts by the day an event happened in, whatever order events
# arrive in, so concurrent writers must end where one writer does; the check-in feature keeps
# a streak, and a check-in arriving after a later day's is late by design (order matters).
RULE_CHECKIN = """
  - key: daily_check_in
    name: Daily check-in
    event: check_in
    currency: beans
    amount: 1
    limit: {per_day: 1}
"""


def load_coffee_with_capped_check_in(engine: Engine) -> LoadedProgram:
    """Load coffee with its check-in as a per-day capped rule (for order-independence tests)."""
    source = (EXAMPLES / "coffee.yaml").read_text(encoding="utf-8")
    source = re.sub(r"\ncheckin:\n(  .*\n)+", "\n", source)
    source = source.replace("\nladder:", RULE_CHECKIN + "\nladder:", 1)
    with engine.begin() as conn:
        return programs.load(conn, parse_program(source), source, now=NOW).loaded
