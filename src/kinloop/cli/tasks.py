"""`kinloop tasks`: what members do with the program's tasks, for the operator."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from kinloop.cli.common import open_engine, out, print_json
from kinloop.cli.errors import handled
from kinloop.domain.errors import NotFound
from kinloop.services import growth_badges, programs

app = typer.Typer(help="Tasks: completions per task and period.", no_args_is_help=True)


@app.command("stats")
@handled
def stats(
    db: Annotated[str | None, typer.Option("--db", help="Database URL [env: KINLOOP_DATABASE_URL].")] = None,
    program: Annotated[
        str | None, typer.Option("--program", help="Program key (needed when several are loaded).")
    ] = None,
    task: Annotated[str | None, typer.Option("--task", help="Only this task.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Completions per task and period (day, week, month, or `all` for one-off tasks)."""

    engine = open_engine(db)
    with engine.connect() as conn:
        lp = programs.active(conn, program)
        if task is not None and task not in {t.key for t in lp.program.tasks}:
            known = ", ".join(t.key for t in lp.program.tasks) or "none"
            raise NotFound(f"no task {task!r} in this program (its tasks: {known})", field="task")
        rows = growth_badges.task_stats(conn, lp, task=task)
    if as_json:
        print_json(rows)
        return
    table = Table("task", "name", "period", "completions", title="task completions")
    for r in rows:
        table.add_row(r["task"], r["name"], r["period"], str(r["completions"]))
    out.print(table if rows else "no task completed yet")
