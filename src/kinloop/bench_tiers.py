"""`kinloop bench tiers`: a full tier evaluation over N members, beside the store's ceiling.

N members are built in bulk (COPY on PostgreSQL) with a year of qualification history (a few
days of growth each in 2026) and an earned tier, some of them above what 2026 qualifies them
for. The ladder reviews yearly over the calendar year, one level at a time, so the evaluation
run on 1 January 2027 reviews every member and demotes some. The ceiling is a plain read of
the same rows the evaluation reads (members with their status, qualification summed per
member); `ratio` = ceiling time / evaluation time.
"""

from __future__ import annotations

import random
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from sqlalchemy import Engine, text

from kinloop.bench import _drop_schemas, _engine_in, _targets
from kinloop.domain.tiers import tier_for
from kinloop.program.loader import compile_program, parse_program
from kinloop.services import programs
from kinloop.services import tiers as tier_svc
from kinloop.store import migrate
from kinloop.store.bulk import insert_rows
from kinloop.store.db import database_url
from kinloop.store.tables import members, tier_qualification, tier_runs, tier_status

SCHEMA = "kinloop_bench"
PROGRAM = """
key: tiers_bench
name: Tiers bench
currencies: [{key: xp, name: Experience, unit: XP, kind: growth}]
event_types: [{key: visit}]
ladder:
  currency: xp
  window: calendar_year
  cadence: yearly
  one_level_drop: true
  tiers:
    - {key: bronze, name: Bronze, threshold: 0}
    - {key: silver, name: Silver, threshold: 100}
    - {key: gold, name: Gold, threshold: 500}
    - {key: platinum, name: Platinum, threshold: 2000}
"""
NOW = datetime(2027, 1, 1, 6, tzinfo=UTC)
CHUNK = 100_000


def _build(engine: Engine, n: int, program_id: int, console: Console | None) -> None:
    """N members, their 2026 qualification and earned tiers, in bulk."""
    rng = random.Random(4)
    ladder = compile_program(parse_program(PROGRAM)).ladder
    assert ladder is not None
    created = datetime(2025, 6, 1, tzinfo=UTC)
    year = date(2026, 1, 1).toordinal()
    for lo in range(0, n, CHUNK):
        hi = min(n, lo + CHUNK)
        member_rows, day_rows, status_rows = [], [], []
        for pk in range(lo + 1, hi + 1):
            total = 0
            for day in rng.sample(range(365), rng.choice((1, 2, 3, 4, 5))):
                amount = rng.choice((10, 20, 50, 100, 300, 800))
                total += amount
                day_rows.append({"member_pk": pk, "currency": "xp", "day": year + day, "amount": amount})
            # Some members earned more last year than they qualify for now: they are reviewed down.
            reached = tier_for(ladder, total + rng.choice((0, 0, 0, 200, 1000, 3000)))
            earned = reached.key if reached else None
            member_rows.append(
                {
                    "id": pk,
                    "program_id": program_id,
                    "member_id": f"m{pk:08d}",
                    "tier": earned,
                    "profile": {},
                    "created_at": created,
                }
            )
            status_rows.append(
                {
                    "member_pk": pk,
                    "earned": earned,
                    "reached_on": date(2026, 3, 1).toordinal(),
                    "grace_until": None,
                    "paid": None,
                    "paid_until": None,
                    "manual": None,
                    "manual_until": None,
                    "locked": False,
                    "kept": None,
                    "kept_until": None,
                }
            )
        with engine.begin() as conn:
            insert_rows(conn, members, member_rows)
            insert_rows(conn, tier_qualification, day_rows)
            insert_rows(conn, tier_status, status_rows)
        if console is not None:
            console.print(f"built {hi:,} members", end="\r")
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT setval(pg_get_serial_sequence('members', 'id'), :n)"), {"n": n})
            conn.execute(text("ANALYZE members; ANALYZE tier_status; ANALYZE tier_qualification"))
        insert_rows(
            conn,
            tier_runs,
            [{"program_id": program_id, "evaluated_on": date(2026, 12, 31).toordinal(), "evaluated_at": NOW}],
        )


def _ceiling(engine: Engine) -> float:
    """Read what the evaluation reads, with no decisions: the store's ceiling."""
    started = time.perf_counter()
    with engine.connect() as conn:
        for _ in conn.execute(
            text("SELECT m.id, m.member_id, m.tier, s.* FROM members m LEFT JOIN tier_status s ON s.member_pk = m.id"),
            execution_options={"yield_per": 20000},
        ):
            pass
        for _ in conn.execute(
            text("SELECT member_pk, day, amount FROM tier_qualification ORDER BY member_pk, day"),
            execution_options={"yield_per": 50000},
        ):
            pass
    return time.perf_counter() - started


def run_tiers_bench(db: str | None, *, members: int, progress_console: Console | None = None) -> dict[str, Any]:
    """Build the members, evaluate them all once, and return the figures."""
    with tempfile.TemporaryDirectory(prefix="kinloop-bench-tiers-") as tmpdir:
        backend, url, _ = _targets(db, Path(tmpdir))
        engine = _engine_in(url, SCHEMA)
        try:
            migrate.upgrade(engine)
            with engine.begin() as conn:
                loaded = programs.load(conn, parse_program(PROGRAM), PROGRAM, now=NOW).loaded
            started = time.perf_counter()
            _build(engine, members, loaded.program_id, progress_console)
            build_seconds = time.perf_counter() - started
            ceiling = _ceiling(engine)
            started = time.perf_counter()
            with engine.begin() as conn:
                result = tier_svc.evaluate(conn, loaded, now=NOW)
            seconds = time.perf_counter() - started
        finally:
            engine.dispose()
            if backend == "postgresql":
                _drop_schemas(url)
    return {
        "database": backend if db is None else database_url(db).split("@")[-1],
        "members": members,
        "moved": result.changed,
        "members_per_s": round(members / seconds, 1),
        "seconds": round(seconds, 3),
        "ceiling_seconds": round(ceiling, 3),
        "ratio": round(ceiling / seconds, 3),
        "build_seconds": round(build_seconds, 3),
    }
