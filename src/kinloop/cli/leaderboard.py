"""`kinloop leaderboard KEY`: a board's top N, or one member's rank."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from kinloop.cli.common import DbOption, JsonOption, ProgramOption, open_engine, out, print_json
from kinloop.cli.errors import handled
from kinloop.clock import utcnow
from kinloop.services import leaderboards, programs


@handled
def leaderboard(
    key: Annotated[str, typer.Argument(help="Leaderboard key.")],
    period: Annotated[
        str | None, typer.Option("--period", help="A day, month (2026-03) or ISO week (2026-W10); default now.")
    ] = None,
    group: Annotated[str | None, typer.Option("--group", help="The group, on boards ranked per attribute.")] = None,
    top: Annotated[int, typer.Option("--top", min=1, max=1000, help="How many to list.")] = 10,
    member: Annotated[str | None, typer.Option("--member", help="Show this member's rank instead.")] = None,
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """A leaderboard's top N (score, then who reached it first, then member id), or a member's rank."""

    engine = open_engine(db)
    with engine.connect() as conn:
        lp = programs.active(conn, program)
        if member is not None:
            result = leaderboards.standing(conn, lp, key, member, period=period, now=utcnow())
        else:
            result = leaderboards.top(conn, lp, key, period=period, group=group, limit=top, now=utcnow())
    if as_json:
        print_json(result)
        return
    if member is not None:
        out.print(f"{member}: {result['text']}")
        return
    where = f" — {result['group']}" if result["group"] else ""
    table = Table("rank", "member", "score", title=f"{result['name']} ({result['period']}{where})")
    for e in result["entries"]:
        table.add_row(str(e["rank"]), e["member_id"], e["text"])
    out.print(table)
    out.print(f"{result['members']:,} member(s) on the board")
