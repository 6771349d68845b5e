"""`kinloop check-in`: a member's daily check-in from the command line (support desks, scripts)."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer

from kinloop.cli.common import DbOption, JsonOption, ProgramOption, out, print_json, program_transaction
from kinloop.cli.errors import handled
from kinloop.cli.tiers import parse_moment
from kinloop.clock import utcnow
from kinloop.domain.errors import InvalidInput
from kinloop.services import checkin as checkin_svc


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{text!r} is not a date (YYYY-MM-DD)", field="makeup_for") from None


@handled
def check_in(
    member_id: Annotated[str, typer.Argument(help="The member checking in.")],
    at: Annotated[str | None, typer.Option("--at", help="When (ISO datetime with offset; default now).")] = None,
    makeup_for: Annotated[
        str | None, typer.Option("--makeup-for", help="Use a make-up card for this missed day (YYYY-MM-DD).")
    ] = None,
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check a member in for their day (idempotent per member and local day), or fill a missed day."""
    now = utcnow()
    moment = parse_moment(at, "at") if at else now
    makeup = _day(makeup_for) if makeup_for else None
    with program_transaction(db, program) as (conn, lp):
        outcome = checkin_svc.check_in(conn, lp, member_id, at=moment, now=now, makeup_for=makeup)
    if as_json:
        print_json(outcome)
        return
    checkin = outcome.get("checkin") or {}
    repeat = " (already checked in that day)" if outcome.get("status") == "duplicate" else ""
    out.print(f"{member_id}: {checkin.get('text', checkin.get('status', 'checked in'))}{repeat}", markup=False)
    for award in outcome.get("awards", []):
        out.print(f"  + {award.get('text', award.get('amount'))}", markup=False)
