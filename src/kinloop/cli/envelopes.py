"""`kinloop envelopes ...`: red envelope jobs (close, birthdays, daily), compensation and figures."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from typing import Annotated, Any

import typer
from sqlalchemy import Connection

from kinloop.cli.common import DbOption, JsonOption, ProgramOption, out, print_json
from kinloop.cli.draws import run
from kinloop.cli.errors import handled
from kinloop.clock import utcnow
from kinloop.domain.errors import InvalidInput
from kinloop.services import envelopes
from kinloop.services.programs import LoadedProgram

app = typer.Typer(help="Red envelopes: members gift points; the program sends some itself.", no_args_is_help=True)


def _job(db: str | None, program: str | None, job: Callable[..., dict[str, int]], verb: str, as_json: bool) -> None:
    now = utcnow()
    done = run(db, program, lambda c, lp: job(c, lp, now=now), write=True)
    if as_json:
        print_json({verb: done})
    else:
        out.print(", ".join(f"{k}: {v}" for k, v in done.items()))


@app.command("close")
@handled
def close(db: DbOption = None, program: ProgramOption = None, as_json: JsonOption = False) -> None:
    """Close envelopes whose claim window is over and return the unclaimed rest to the senders."""
    _job(db, program, envelopes.close_due, "closed", as_json)


@app.command("birthdays")
@handled
def birthdays(db: DbOption = None, program: ProgramOption = None, as_json: JsonOption = False) -> None:
    """Send today's birthday envelopes (once a year per member; safe to run again)."""
    _job(db, program, envelopes.birthdays, "birthdays", as_json)


@app.command("daily")
@handled
def daily(db: DbOption = None, program: ProgramOption = None, as_json: JsonOption = False) -> None:
    """Send today's daily envelopes to members whose condition holds (once a day; safe to run again)."""
    _job(db, program, envelopes.daily, "daily", as_json)


@app.command("compensate")
@handled
def compensate(
    member_id: str,
    amount: Annotated[str, typer.Option("--amount")],
    reason: Annotated[str, typer.Option("--reason")],
    key: Annotated[str, typer.Option("--key", help="Once per key.")],
    actor: Annotated[str, typer.Option("--actor", help="Who sends it (audited).")] = "cli",
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """Send a compensation envelope in the program's name (audited)."""
    try:
        value = Decimal(amount)
    except ArithmeticError:
        raise InvalidInput(f"{amount!r} is not a number", field="amount") from None

    def go(c: Connection, lp: LoadedProgram) -> dict[str, Any]:
        return envelopes.compensate(c, lp, member_id, amount=value, reason=reason, key=key, actor=actor, now=utcnow())

    view = run(db, program, go, write=True)
    if as_json:
        print_json(view)
    else:
        out.print(f"compensation {view['key']} to {view['to']}: {view['text']}")


@app.command("stats")
@handled
def stats(db: DbOption = None, program: ProgramOption = None, as_json: JsonOption = False) -> None:
    """Volumes and claim rates per kind of envelope."""
    found = run(db, program, lambda c, lp: envelopes.stats(c, lp), write=False)
    if as_json:
        print_json(found)
        return
    for kind, per_currency in found.items():
        for figures in per_currency.values():
            out.print(f"{kind}: {figures['text']} (claim rate {figures['claim_rate']})")
