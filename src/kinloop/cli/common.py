"""What every command module shares: options, the output console, JSON output, and the way to
the database (kept apart from app.py, which imports the command modules)."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from sqlalchemy import Connection, Engine, inspect

from kinloop.domain.errors import NotInitialised
from kinloop.services import programs
from kinloop.services.programs import LoadedProgram
from kinloop.store import migrate
from kinloop.store.db import connect, database_url

DbOption = Annotated[
    str | None, typer.Option("--db", help="Database URL [env: KINLOOP_DATABASE_URL; default sqlite:///kinloop.db]")
]
ProgramOption = Annotated[str | None, typer.Option("--program", help="Program key (needed when several are loaded).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

out = Console(highlight=False, soft_wrap=True)


def open_engine(db: str | None) -> Engine:
    """An engine on an initialised database (or a clear error saying how to initialise it)."""
    engine = connect(db)
    if "alembic_version" not in inspect(engine).get_table_names():
        raise NotInitialised(f"{database_url(db)} has no kinloop data; run `kinloop init PROGRAM.yaml` first")
    if not migrate.is_current(engine):
        raise NotInitialised("the database schema is older than this kinloop; run `kinloop init PROGRAM.yaml`")
    return engine


@contextmanager
def program_transaction(db: str | None, program: str | None) -> Iterator[tuple[Connection, LoadedProgram]]:
    """One transaction on the database, with the active version of the program (`--program`)."""
    with open_engine(db).begin() as conn:
        yield conn, programs.active(conn, program)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def drain(
    db: str | None, program: str | None, job: Callable[..., dict[str, int]], *, now: datetime
) -> tuple[programs.LoadedProgram, dict[str, int]]:
    """Run a ledger job in transactions of bounded size until nothing more is due."""
    engine = open_engine(db)
    totals: dict[str, int] = {}
    while True:
        with engine.begin() as conn:
            lp = programs.active(conn, program)
            done = job(conn, lp, now=now)
        for k, v in done.items():
            totals[k] = totals.get(k, 0) + v
        if not done:
            return lp, totals


def print_totals(lp: programs.LoadedProgram, verb: str, totals: dict[str, int], as_json: bool) -> None:
    """Print what a drained job did per currency, in the program's words (or as JSON)."""
    if as_json:
        print_json({verb: totals})
        return
    words = ", ".join(lp.program.currencies[k].display(v) for k, v in totals.items())
    out.print(f"{verb}: {words or 'nothing due'}")
