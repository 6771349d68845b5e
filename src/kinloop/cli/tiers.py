"""`kinloop tiers ...`: the periodic review, manual tiers, and previews of ladder changes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kinloop.cli.common import DbOption, JsonOption, ProgramOption, open_engine, out, print_json, program_transaction
from kinloop.cli.errors import handled
from kinloop.domain.errors import InvalidInput
from kinloop.domain.program import Program

tiers_app = typer.Typer(help="Tiers: the periodic review, manual tiers, ladder previews.", no_args_is_help=True)


def parse_moment(text: str, name: str) -> datetime:
    """An ISO date (midnight UTC) or an ISO datetime with an offset."""
    try:
        if len(text) == 10:
            return datetime.combine(date.fromisoformat(text), time(), tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{text!r} is not an ISO date or datetime", field=name) from None
    if moment.tzinfo is None:
        raise InvalidInput(f"{text!r} needs a UTC offset (e.g. 2027-01-01T00:00:00+00:00)", field=name)
    return moment


@tiers_app.command("evaluate")
@handled
def evaluate(
    db: DbOption = None,
    program: ProgramOption = None,
    now: Annotated[str | None, typer.Option("--now", help="Evaluate as of this ISO time (default: now).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Review every member: upgrades, retention and demotions per the ladder, paid terms that ended,
    and the tier.will_change / tier.expiring messages (run it daily)."""
    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    from kinloop.cli.errors import err
    from kinloop.clock import utcnow
    from kinloop.services import tiers as tier_svc

    moment = parse_moment(now, "now") if now else utcnow()
    with program_transaction(db, program) as (conn, lp):
        columns = (TextColumn("evaluating tiers: {task.completed:,} members"), TimeElapsedColumn())
        with Progress(*columns, console=err, disable=as_json, transient=True) as bar:
            task = bar.add_task("evaluate", total=None)
            result = tier_svc.evaluate(conn, lp, now=moment, on_progress=lambda n: bar.update(task, completed=n))
    if as_json:
        print_json(result.as_json())
        return
    out.print(f"{result.members:,} members reviewed, {result.changed:,} moved")
    for move, n in sorted(result.moves.items()):
        out.print(f"  {move}: {n:,}")
    if result.warned or result.reminded:
        out.print(f"  {result.warned:,} tier.will_change, {result.reminded:,} tier.expiring messages")
    if result.skipped:
        out.print(f"  {result.skipped:,} changed meanwhile; left for the next run")


@tiers_app.command("set")
@handled
def set_tier(
    member_id: str,
    tier: Annotated[str, typer.Argument(help="Tier key, or `none` to clear the manual tier.")],
    reason: Annotated[str, typer.Option("--reason", help="Why; kept in the audit log.")],
    actor: Annotated[str, typer.Option("--actor", help="Who makes the change.")] = "cli",
    until: Annotated[str | None, typer.Option("--until", help="A floor until this ISO date.")] = None,
    lock: Annotated[bool, typer.Option("--lock", help="Exactly this tier, whatever is earned.")] = False,
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """Set a member's tier by hand: a floor (for good or --until a date) or --lock'ed; audited."""
    from kinloop.clock import utcnow
    from kinloop.services import tiers as tier_svc

    if until and lock:
        raise InvalidInput("give --until or --lock, not both", field="until")
    if not reason.strip():
        raise InvalidInput("a reason is required", field="reason")
    with program_transaction(db, program) as (conn, lp):
        result = tier_svc.set_manual(
            conn,
            lp,
            member_id,
            None if tier == "none" else tier,
            reason=reason,
            actor=actor,
            until=parse_moment(until, "until") if until else None,
            lock=lock,
            now=utcnow(),
        )
    if as_json:
        print_json(result.as_json())
    else:
        out.print(f"{member_id}: {result.tier or 'no tier'}" + ("" if result.changed else " (unchanged)"))


@tiers_app.command("preview")
@handled
def preview(
    file: Annotated[Path, typer.Argument(help="The new program YAML file.")],
    db: DbOption = None,
    now: Annotated[str | None, typer.Option("--now", help="As of this ISO time (default: now).")] = None,
    as_json: JsonOption = False,
) -> None:
    """Who would move where if this file were activated: a from→to count matrix."""
    from kinloop.clock import utcnow
    from kinloop.program.loader import compile_program, parse_program
    from kinloop.services import programs
    from kinloop.services import tiers as tier_svc

    if not file.is_file():
        raise InvalidInput(f"no such file: {file}", field="file")
    spec = parse_program(file.read_text(encoding="utf-8"), source=str(file))
    new = compile_program(spec, source=str(file))
    engine = open_engine(db)
    with engine.connect() as conn:
        lp = programs.active(conn, spec.key)
        matrix = tier_svc.preview(conn, lp, new, now=parse_moment(now, "now") if now else utcnow())
    if as_json:
        print_json({"program": spec.key, "matrix": matrix})
        return
    targets = sorted({t for row in matrix.values() for t in row}, key=_rank(new))
    table = Table("from \\ to", *targets, title=f"{spec.key}: tiers after activating {file.name}")
    for source in sorted(matrix, key=_rank(lp.program)):
        table.add_row(source, *[f"{matrix[source].get(t, 0):,}" for t in targets])
    out.print(table)


def _rank(program: Program) -> Callable[[str], tuple[int, str]]:
    ladder = program.ladder

    def rank(key: str) -> tuple[int, str]:
        return (ladder.index(key) if ladder else -1, key)

    return rank
