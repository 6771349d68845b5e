"""Housekeeping: the time-driven changes that must happen without anyone asking.

Holds past their time-out give their points back, pending amounts past their holding period
become available, lots past their expiry expire, and group envelopes past their claim window
return the unclaimed rest. Each job is bounded per round and exactly-once however often or
concurrently it runs (each locks the members it touches and re-reads), so `kinloop worker`
can run it every minute on any number of processes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from kinloop.services import envelopes, holds, ledger, programs
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import programs as program_rows

Job = Callable[..., dict[str, int]]
# Cheapest first: a hold's member is waiting at a checkout.
JOBS: tuple[tuple[str, Job], ...] = (
    ("holds_released", holds.expire_due),
    ("pending_released", ledger.release),
    ("envelopes_closed", envelopes.close_due),
    ("lots_expired", ledger.expire),
)


def _program_keys(conn: Connection) -> list[str]:
    return list(conn.execute(select(program_rows.c.key).order_by(program_rows.c.id)).scalars())


def run_due(engine: Engine, *, now: datetime, limit: int = 1000) -> dict[str, dict[str, Any]]:
    """One round of every job for every program, each job in its own transaction; returns
    what each job did per program (only the jobs that did something)."""
    with engine.connect() as conn:
        keys = _program_keys(conn)
    done: dict[str, dict[str, Any]] = {}
    for key in keys:
        for name, job in JOBS:
            with engine.begin() as conn:
                loaded: LoadedProgram = programs.active(conn, key)
                result = job(conn, loaded, now=now, limit=limit)
            if any(result.values()):  # jobs that found nothing due say so with zeros
                done.setdefault(key, {})[name] = result
    return done
