"""`kinloop stats refresh` (the dashboard's rollups) and `kinloop bench dashboard`."""

from __future__ import annotations

import logging
import threading
from typing import Annotated

import typer
from rich.progress import BarColumn, Progress, TaskID, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import Engine
from sqlalchemy.exc import OperationalError

from kinloop.cli.common import DbOption, JsonOption, ProgramOption, open_engine, out, print_json
from kinloop.cli.errors import err, handled
from kinloop.clock import utcnow
from kinloop.services import dashboard

stats_app = typer.Typer(help="The rollups behind the console's dashboard.", no_args_is_help=True)
log = logging.getLogger(__name__)


@stats_app.command("refresh")
@handled
def stats_refresh(db: DbOption = None, program: ProgramOption = None, as_json: JsonOption = False) -> None:
    """Add what was written since the last refresh to the dashboard's daily rollups."""
    engine = open_engine(db)
    show = not as_json and err.is_terminal
    columns = (TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True, disable=not show) as bar:
        tasks: dict[str, TaskID] = {}

        def progress(source: str, done: int, total: int) -> None:
            if source not in tasks:
                tasks[source] = bar.add_task(source, total=max(total, 1))
            bar.update(tasks[source], completed=done, total=max(total, 1))

        done = dashboard.refresh_all(engine, now=utcnow(), program=program, progress=progress)
    if as_json:
        print_json([r.as_json() for r in done])
        return
    for r in done:
        added = ", ".join(f"{n:,} {source}" for source, n in r.final_rows.items() if n)
        recent = sum(r.open_rows.values())
        out.print(
            f"{r.program}: added {added or 'nothing new'}"
            + (f"; {recent:,} recent rows counted provisionally" if recent else "")
            + f" ({r.seconds:.2f} s)"
        )


def refresh_in_background(engine: Engine, stop: threading.Event, every: float) -> threading.Thread | None:
    """Refresh the rollups every `every` seconds until `stop` is set (for `kinloop worker`)."""
    if every <= 0:
        return None

    def loop() -> None:
        while not stop.is_set():
            try:
                dashboard.refresh_all(engine, now=utcnow())
            except OperationalError as exc:  # the database went away: the next round tries again
                log.warning("dashboard refresh: database unavailable (%s)", exc.orig or exc)
            stop.wait(every)

    thread = threading.Thread(target=loop, name="kinloop-stats", daemon=True)
    thread.start()
    return thread


@handled
def bench_dashboard(
    db: Annotated[
        str | None,
        typer.Option(
            "--db",
            help="Database URL (default: a temporary SQLite file). On PostgreSQL the benchmark works in a "
            "schema of its own, kinloop_bench_dash, dropped afterwards.",
        ),
    ] = None,
    members_n: Annotated[int, typer.Option("--members", min=10, max=10_000_000)] = 100_000,
    entries: Annotated[int, typer.Option("--entries", min=100, max=100_000_000)] = 10_000_000,
    runs: Annotated[int, typer.Option("--runs", min=1, max=1000, help="Warm GETs after the cold one.")] = 9,
    as_json: JsonOption = False,
) -> None:
    """Build a year of a program in bulk, refresh the rollups, then time GET /console/dashboard
    over HTTP (cold, then warm) beside one count(*) over the entries."""
    from kinloop.bench_dashboard import run_dashboard_bench

    result = run_dashboard_bench(
        db, members=members_n, entries=entries, runs=runs, progress_console=None if as_json else err
    )
    if as_json:
        print_json(result)
        return
    table = Table("figure", "value", title=f"kinloop bench dashboard ({result['database']})")
    for k, v in result.items():
        table.add_row(k, f"{v:,}" if isinstance(v, int | float) else str(v))
    out.print(table)


def register(app: typer.Typer, bench_app: typer.Typer) -> None:
    """Add `kinloop stats` and `kinloop bench dashboard`."""
    app.add_typer(stats_app, name="stats")
    bench_app.command("dashboard")(bench_dashboard)
