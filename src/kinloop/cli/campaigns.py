"""`kinloop campaigns`: the program's campaigns, past, running and upcoming."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from kinloop.cli.common import open_engine, out, print_json
from kinloop.cli.errors import handled
from kinloop.clock import utcnow
from kinloop.services import campaigns as campaign_svc
from kinloop.services import programs

campaigns_app = typer.Typer(help="Campaigns: member days, double points, bonuses.", no_args_is_help=True)


@campaigns_app.command("list")
@handled
def campaigns_list(
    db: Annotated[str | None, typer.Option("--db", help="Database URL [env: KINLOOP_DATABASE_URL]")] = None,
    program: Annotated[str | None, typer.Option("--program", help="Program key (when several are loaded).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Every campaign of the active program: its schedule, status now, next start and budget left."""

    engine = open_engine(db)
    with engine.connect() as conn:
        lp = programs.active(conn, program)
        rows = campaign_svc.listing(conn, lp.program_id, lp.program, utcnow())
    if as_json:
        print_json({"campaigns": rows})
        return
    if not rows:
        out.print("this program has no campaigns")
        return
    table = Table("campaign", "status", "what", "next start", "budget")
    for r in rows:
        budget = r["budget"]["text"] if r["budget"] else "-"
        table.add_row(r["key"], r["status"], r["text"], r["next_start"] or "-", budget)
    out.print(table)
