"""`kinloop draws ...` and `kinloop goals ...`: the points outlets that operators run from the shell."""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import yaml
from pydantic import ValidationError
from rich.table import Table
from sqlalchemy import Connection

from kinloop.cli.common import DbOption, JsonOption, ProgramOption, open_engine, out, print_json
from kinloop.cli.errors import err, handled
from kinloop.clock import utcnow
from kinloop.domain.errors import InvalidInput
from kinloop.services import draws, goals, programs
from kinloop.services.programs import LoadedProgram

T = TypeVar("T")

draws_app = typer.Typer(
    help="Draws: prize pools paid with points, with results anyone can verify.", no_args_is_help=True
)
goals_app = typer.Typer(help="Shared goals that members donate points to.", no_args_is_help=True)


def run(db: str | None, program: str | None, fn: Callable[[Connection, LoadedProgram], T], *, write: bool) -> T:
    """`fn(conn, program)` in one transaction on an initialised database."""
    engine = open_engine(db)
    with engine.begin() if write else engine.connect() as conn:
        return fn(conn, programs.active(conn, program))


def _strings(data: Any) -> Any:
    """YAML floats as exact decimal text (0.1 stays 0.1), so that odds and amounts are exact."""
    if isinstance(data, float):
        return str(Decimal(repr(data)))
    if isinstance(data, dict):
        return {k: _strings(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_strings(v) for v in data]
    return data


def read_draw(path: Path) -> draws.DrawIn:
    """A draw file (YAML or JSON, the body of POST /v1/draws)."""
    from kinloop.api.draws import DrawIn, spec_from

    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        body = DrawIn.model_validate_json(_dump(_strings(raw)))
    except (OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"{path}: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{path}: {where}: {first['msg']}", field=where) from None
    return spec_from(body)


def _dump(data: Any) -> str:
    import json

    return json.dumps(data, default=str)


def print_draw(view: dict[str, Any]) -> None:
    out.print(
        f"{view['name']} ({view['key']}): {view['status']}, {view['cost_text']} an entry, {view['entries']} entries"
    )
    table = Table("prize", "kind", "odds", "stock")
    for p in view["prizes"]:
        table.add_row(p["name"], p["kind"], p["probability"], "unlimited" if p["stock"] is None else str(p["stock"]))
    out.print(table)
    out.print(f"expected cost: {view['expected_cost']['text']} (ratio {view['expected_cost']['ratio']})")
    out.print(f"commitment sha256(seed) = {view['commitment']}")
    out.print(f"seed = {view['seed']}" if view["seed"] else "seed: revealed when the draw closes")


@draws_app.command("create")
@handled
def create(
    file: Annotated[Path, typer.Argument(help="Draw file (YAML or JSON), as the body of POST /v1/draws.")],
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a draw; its seed's commitment is published at once, the seed when it closes."""
    spec = read_draw(file)
    view = run(db, program, lambda c, lp: draws.create(c, lp, spec, now=utcnow(), actor="cli"), write=True)
    if as_json:
        print_json(view)
    else:
        print_draw(view)


@draws_app.command("list")
@handled
def list_draws(db: DbOption = None, program: ProgramOption = None, as_json: JsonOption = False) -> None:
    """Every draw with its odds, stock and expected cost."""
    found = run(db, program, lambda c, lp: draws.listing(c, lp, now=utcnow()), write=False)
    if as_json:
        print_json(found)
        return
    for view in found:
        print_draw(view)


@draws_app.command("enter")
@handled
def enter(
    draw: str,
    member_id: str,
    key: Annotated[str, typer.Option("--key", help="Entry key: a repeat returns the first result.")],
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """Enter a draw for a member (pays the cost, draws the prize)."""

    def go(c: Connection, lp: LoadedProgram) -> dict[str, Any]:
        return draws.enter(c, lp, draw, member_id, entry_key=key, now=utcnow(), actor="cli").as_json(lp.program)

    result = run(db, program, go, write=True)
    if as_json:
        print_json(result)
    else:
        out.print(result["text"])


@draws_app.command("close")
@handled
def close(draw: str, db: DbOption = None, program: ProgramOption = None, as_json: JsonOption = False) -> None:
    """Close a draw now and reveal its seed."""
    view = run(db, program, lambda c, lp: draws.close(c, lp, draw, now=utcnow(), actor="cli"), write=True)
    if as_json:
        print_json(view)
    else:
        print_draw(view)


@draws_app.command("record")
@handled
def record(draw: str, db: DbOption = None, program: ProgramOption = None) -> None:
    """Print the public record (JSON): commitment, seed once closed, odds tables, every entry."""
    print_json(run(db, program, lambda c, lp: draws.record(c, lp, draw, now=utcnow()), write=False))


@draws_app.command("verify")
@handled
def verify(
    draw: Annotated[str, typer.Argument(help="Draw key (read from the database) or a record file (JSON).")],
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """Recompute every result of a closed draw from its public record; exit 1 on any difference."""
    path = Path(draw)
    if path.suffix == ".json" and path.exists():
        import json

        data = json.loads(path.read_text(encoding="utf-8"))
    else:
        data = run(db, program, lambda c, lp: draws.record(c, lp, draw, now=utcnow()), write=False)
    problems = draws.verify_record(data)
    if as_json:
        print_json({"draw": data["draw"], "entries": len(data["entries"]), "ok": not problems, "problems": problems})
    elif problems:
        for p in problems:
            err.print(p, markup=False)
    else:
        out.print(f"{data['draw']}: all {len(data['entries'])} entries recomputed from the revealed seed; they match")
    if problems:
        raise typer.Exit(1)


@draws_app.command("stats")
@handled
def draw_stats(db: DbOption = None, program: ProgramOption = None, as_json: JsonOption = False) -> None:
    """Entries, entrants, points collected and paid out, per draw."""
    found = run(db, program, lambda c, lp: draws.stats(c, lp, now=utcnow()), write=False)
    if as_json:
        print_json(found)
        return
    for s in found:
        out.print(
            f"{s['draw']}: {s['text']}; expected {s['expected_cost_per_entry']} per entry, actual {s['cost_per_entry']}"
        )


# --- goals -----------------------------------------------------------------------------------


@goals_app.command("create")
@handled
def goal_create(
    key: str,
    name: Annotated[str, typer.Option("--name")],
    currency: Annotated[str, typer.Option("--currency")],
    target: Annotated[str, typer.Option("--target")],
    repeat: Annotated[bool, typer.Option("--repeat", help="Start the next round when reached.")] = False,
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a shared goal."""
    amount = _number(target)
    view = run(
        db,
        program,
        lambda c, lp: goals.create(
            c, lp, key=key, name=name, currency_key=currency, target=amount, repeat=repeat, now=utcnow(), actor="cli"
        ),
        write=True,
    )
    if as_json:
        print_json(view)
    else:
        out.print(view["progress_text"])


@goals_app.command("donate")
@handled
def goal_donate(
    goal: str,
    member_id: str,
    amount: Annotated[str, typer.Option("--amount")],
    key: Annotated[str, typer.Option("--key", help="Donation key: a repeat returns the first donation.")],
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """Donate a member's points to a goal (final)."""
    value = _number(amount)
    result = run(
        db,
        program,
        lambda c, lp: goals.donate(c, lp, goal, member_id, amount=value, donation_key=key, now=utcnow(), actor="cli"),
        write=True,
    )
    if as_json:
        print_json(result)
    else:
        out.print(f"{result['text']}; {result['progress_text']}")


@goals_app.command("show")
@handled
def goal_show(goal: str, db: DbOption = None, program: ProgramOption = None, as_json: JsonOption = False) -> None:
    """A goal's progress, donors and milestones."""
    view = run(db, program, lambda c, lp: goals.show(c, lp, goal), write=False)
    if as_json:
        print_json(view)
        return
    out.print(view["progress_text"])
    for d in view["donors"]:
        out.print(f"  {d['member_id']}: {d['amount']}")
    for m in view["milestones"]:
        out.print(f"  round {m['round']} reached {m['reached_at']} by {len(m['donors'])} donors")


@goals_app.command("stats")
@handled
def goal_stats(db: DbOption = None, program: ProgramOption = None, as_json: JsonOption = False) -> None:
    """Rounds reached, donations and donors, per goal."""
    found = run(db, program, lambda c, lp: goals.stats(c, lp), write=False)
    if as_json:
        print_json(found)
        return
    for s in found:
        out.print(
            f"{s['goal']}: {s['progress_text']}; {s['rounds_reached']} rounds reached, "
            f"{s['donations']} donations by {s['donors']} members"
        )


def _number(text: str) -> Decimal:
    try:
        return Decimal(text)
    except ArithmeticError:
        raise InvalidInput(f"{text!r} is not a number", field="amount") from None
