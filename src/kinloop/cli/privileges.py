"""`kinloop privileges`: use a privilege for a member, and utilisation per privilege and tier."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Literal

import typer
from rich.table import Table

from kinloop.cli.common import DbOption, JsonOption, ProgramOption, open_engine, out, print_json, program_transaction
from kinloop.cli.errors import handled
from kinloop.clock import utcnow
from kinloop.domain.errors import InvalidInput
from kinloop.services import privileges, programs

app = typer.Typer(help="Tier privileges: use them, and see how much they are used.", no_args_is_help=True)


@app.command("use")
@handled
def use(
    member_id: str,
    privilege: str,
    key: Annotated[str, typer.Option("--id", help="Idempotency key: repeating it does nothing.")],
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """Use a privilege for a member now; refused when not held, outside its window or used up."""

    with program_transaction(db, program) as (conn, lp):
        result = privileges.use(conn, lp, member_id, privilege, key=key, now=utcnow())
    if as_json:
        print_json(result)
        return
    again = " (already done; nothing changed)" if result["replayed"] else ""
    out.print(f"{member_id}: {result['text']}{again}")


@app.command("usage")
@handled
def usage(
    period: Annotated[str, typer.Option("--period", help="day, week, month or year.")] = "month",
    on: Annotated[str | None, typer.Option("--on", help="A day in the period (YYYY-MM-DD); default today.")] = None,
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """Use rate per privilege and tier: uses in the period / members in the tier."""

    per = _period(period)
    day = None
    if on is not None:
        try:
            day = date.fromisoformat(on)
        except ValueError:
            raise InvalidInput(f"{on!r} is not a date (YYYY-MM-DD)", field="on") from None
    engine = open_engine(db)
    with engine.connect() as conn:
        lp = programs.active(conn, program)
        report = privileges.usage(conn, lp, per=per, on=day, now=utcnow())
    if as_json:
        print_json(report)
        return
    table = Table(
        "privilege", "tier", "members", "uses", "users", "use rate", title=f"{report['from']} to {report['to']}"
    )
    for r in report["rows"]:
        rate = "-" if r["use_rate"] is None else f"{float(r['use_rate']):.0%}"
        table.add_row(r["name"], r["tier_name"], str(r["members"]), str(r["uses"]), str(r["users"]), rate)
    out.print(table)


_PERIODS: dict[str, Literal["day", "week", "month", "year"]] = {p: p for p in ("day", "week", "month", "year")}


def _period(text: str) -> Literal["day", "week", "month", "year"]:
    if text in _PERIODS:
        return _PERIODS[text]
    raise InvalidInput(f"unknown period {text!r}: use day, week, month or year", field="period")
