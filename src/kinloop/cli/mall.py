"""`kinloop rewards|orders|holds|redemptions` and `kinloop member expiring`: the points mall
from the command line, over the same services as the API."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from kinloop.cli.app import member_app
from kinloop.cli.common import (
    DbOption,
    JsonOption,
    ProgramOption,
    drain,
    open_engine,
    out,
    print_json,
    print_totals,
    program_transaction,
)
from kinloop.cli.errors import handled
from kinloop.clock import utcnow
from kinloop.domain.errors import HoldExpired, InvalidInput
from kinloop.domain.orders import ACTIONS, Action
from kinloop.services import holds, mall, member_view, orders, programs

rewards_app = typer.Typer(help="The points mall's rewards (stock, prices, codes).", no_args_is_help=True)
codes_app = typer.Typer(help="Pools of codes for digital rewards.", no_args_is_help=True)
rewards_app.add_typer(codes_app, name="codes")
orders_app = typer.Typer(help="Orders of the points mall.", no_args_is_help=True)
holds_app = typer.Typer(help="Points held for pending checkouts.", no_args_is_help=True)
KeyOption = Annotated[str | None, typer.Option("--id", help="Idempotency key: repeating it does nothing.")]


# --- rewards --------------------------------------------------------------------------------
@rewards_app.command("load")
@handled
def rewards_load(
    file: Annotated[Path, typer.Argument(help="YAML file: `rewards:` mapping keys to reward fields.")],
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create or replace rewards from a file (what they sold is kept); all or nothing."""
    if not file.is_file():
        raise InvalidInput(f"no such file: {file}", field="file")
    with program_transaction(db, program) as (conn, lp):
        done = mall.load_seed(conn, lp, file.read_text(encoding="utf-8"), now=utcnow(), source=str(file))
    if as_json:
        print_json(done)
        return
    for key, what in done.items():
        out.print(f"{what}: {key}")


@rewards_app.command("list")
@handled
def rewards_list(
    db: DbOption = None,
    program: ProgramOption = None,
    category: Annotated[str | None, typer.Option("--category")] = None,
    everything: Annotated[bool, typer.Option("--all", help="Inactive and hidden ones too.")] = False,
    as_json: JsonOption = False,
) -> None:
    """The rewards, priced now, with what is left."""
    engine = open_engine(db)
    now = utcnow()
    with engine.connect() as conn:
        lp = programs.active(conn, program)
        shown = [
            mall.as_json(r, lp.program, now)
            for r in mall.listing(conn, lp.program_id, category=category, include_hidden=everything)
        ]
    if as_json:
        print_json(shown)
        return
    table = Table("key", "reward", "left", "category", title=f"{lp.program.name}: rewards")
    for r in shown:
        table.add_row(r["key"], r["text"], "∞" if r["left"] is None else str(r["left"]), r["category"] or "")
    out.print(table)


@codes_app.command("upload")
@handled
def codes_upload(
    reward: Annotated[str, typer.Argument(help="The digital reward's key.")],
    file: Annotated[Path, typer.Argument(help="Text file, one code per line.")],
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """Add codes to a reward's pool; each is issued to exactly one order, repeats are skipped."""
    if not file.is_file():
        raise InvalidInput(f"no such file: {file}", field="file")
    codes = file.read_text(encoding="utf-8").splitlines()
    with program_transaction(db, program) as (conn, lp):
        result = mall.upload_codes(conn, lp.program_id, reward, codes, now=utcnow())
    if as_json:
        print_json(result)
    else:
        out.print(f"{reward}: {result['added']} codes added, {result['skipped']} already there, {result['free']} free")


# --- orders ---------------------------------------------------------------------------------
def _print_order(order: orders.Order, lp: programs.LoadedProgram, as_json: bool) -> None:
    if as_json:
        print_json(order.as_json(lp.program))
        return
    again = " (already placed; nothing changed)" if order.replayed else ""
    out.print(f"order {order.id} for {order.member_id}: {order.as_json(lp.program)['text']}{again}")
    for code in order.codes:
        out.print(f"  code: {code}")


@orders_app.command("place")
@handled
def orders_place(
    member_id: str,
    reward: str,
    quantity: Annotated[int, typer.Option("--quantity", min=1, max=100)] = 1,
    key: KeyOption = None,
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """Redeem a reward for a member (tier gate, limit, stock and balance checked; all or nothing)."""
    with program_transaction(db, program) as (conn, lp):
        order = orders.place(conn, lp, member_id, reward, quantity=quantity, key=key, now=utcnow(), actor="cli")
    _print_order(order, lp, as_json)


@orders_app.command("list")
@handled
def orders_list(
    member: Annotated[str | None, typer.Option("--member")] = None,
    status: Annotated[str | None, typer.Option("--status")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """Orders, newest first."""
    engine = open_engine(db)
    with engine.connect() as conn:
        lp = programs.active(conn, program)
        page, _ = orders.listing(conn, lp, member_id=member, status=status, before=None, limit=limit)
    if as_json:
        print_json([o.as_json(lp.program) for o in page])
        return
    table = Table("id", "member", "order", "placed", title=f"{lp.program.name}: orders")
    for o in page:
        shown = o.as_json(lp.program)
        table.add_row(str(o.id), o.member_id, shown["text"], shown["placed_at"])
    out.print(table)


@orders_app.command("show")
@handled
def orders_show(order_id: int, db: DbOption = None, program: ProgramOption = None, as_json: JsonOption = False) -> None:
    """One order, with its codes and history."""
    engine = open_engine(db)
    with engine.connect() as conn:
        lp = programs.active(conn, program)
        order = orders.get(conn, lp, order_id)
    _print_order(order, lp, as_json)
    if not as_json:
        for step in order.row.history:
            out.print(
                f"  {step['at']}: {step['status']} by {step['actor']}"
                + (f" ({step['reason']})" if step.get("reason") else "")
            )


def _mover(action: Action) -> None:
    help_text = {
        "confirm": "Confirm a placed order.",
        "fulfil": "Mark an order fulfilled (a physical reward needs --shipping-reference).",
        "complete": "Mark a fulfilled order completed.",
        "cancel": "Cancel a placed or confirmed order: points and stock go back.",
        "refund": "Refund a fulfilled or completed order: points go back into their lots.",
    }[action]

    @orders_app.command(action, help=help_text)
    @handled
    def move(
        order_id: int,
        shipping_reference: Annotated[str | None, typer.Option("--shipping-reference")] = None,
        reason: Annotated[str | None, typer.Option("--reason")] = None,
        db: DbOption = None,
        program: ProgramOption = None,
        as_json: JsonOption = False,
    ) -> None:
        with program_transaction(db, program) as (conn, lp):
            order = orders.transition(
                conn,
                lp,
                order_id,
                action,
                shipping_reference=shipping_reference,
                reason=reason,
                actor="cli",
                now=utcnow(),
            )
        _print_order(order, lp, as_json)


for _action in ACTIONS:
    _mover(_action)


# --- holds ----------------------------------------------------------------------------------
def _print_hold(hold: holds.Hold, lp: programs.LoadedProgram, as_json: bool) -> None:
    shown = hold.as_json(lp.program, utcnow())
    if as_json:
        print_json(shown)
        return
    again = " (already so; nothing changed)" if hold.outcome == "repeat" else ""
    out.print(f"hold {shown['hold_id']} for {shown['member_id']}: {shown['text']}{again}")


@holds_app.command("create")
@handled
def holds_create(
    member_id: str,
    currency: str,
    amount: str,
    timeout: Annotated[int | None, typer.Option("--timeout", help="Seconds (10 to 30 days; default 900).")] = None,
    reference: Annotated[str | None, typer.Option("--reference", help="The checkout it pays for.")] = None,
    key: KeyOption = None,
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """Hold a member's points for a checkout."""
    with program_transaction(db, program) as (conn, lp):
        hold = holds.create(
            conn,
            lp,
            member_id,
            currency,
            amount,
            timeout_seconds=timeout,
            reference=holds.check_reference(reference),
            key=key,
            now=utcnow(),
            actor="cli",
        )
    _print_hold(hold, lp, as_json)


@holds_app.command("capture")
@handled
def holds_capture(
    hold_id: int, db: DbOption = None, program: ProgramOption = None, as_json: JsonOption = False
) -> None:
    """Spend the held points (capturing again changes nothing)."""
    with program_transaction(db, program) as (conn, lp):
        hold = holds.capture(conn, lp, hold_id, now=utcnow(), actor="cli")
    if hold.outcome == "expired":  # committed above: the points went back
        raise HoldExpired("this hold timed out and its points went back to the member")
    _print_hold(hold, lp, as_json)


@holds_app.command("release")
@handled
def holds_release(
    hold_id: int, db: DbOption = None, program: ProgramOption = None, as_json: JsonOption = False
) -> None:
    """Give the held points back into their lots."""
    with program_transaction(db, program) as (conn, lp):
        hold = holds.release(conn, lp, hold_id, now=utcnow(), actor="cli")
    _print_hold(hold, lp, as_json)


@holds_app.command("expire")
@handled
def holds_expire(db: DbOption = None, program: ProgramOption = None, as_json: JsonOption = False) -> None:
    """Release holds past their time-out; safe to run as often as you like."""
    lp, totals = drain(db, program, holds.expire_due, now=utcnow())
    print_totals(lp, "released", totals, as_json)


# --- figures --------------------------------------------------------------------------------
def redemptions(
    since: Annotated[str | None, typer.Option("--since", help="ISO 8601 with offset, inclusive.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="ISO 8601 with offset, exclusive.")] = None,
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """Redemptions by reward, category and tier over a period."""
    start, end = _stamp(since, "since"), _stamp(until, "until")
    engine = open_engine(db)
    with engine.connect() as conn:
        lp = programs.active(conn, program)
        report = mall.redemptions(conn, lp, since=start, until=end)
    if as_json:
        print_json(report)
        return
    for by in ("reward", "category", "tier"):
        table = Table(by, "orders", "units", "points", "returned", title=f"redemptions by {by}")
        for row in report[f"by_{by}"]:
            table.add_row(
                row["name"], str(row["orders"]), str(row["units"]), str(row["points"]), str(row["returned_orders"])
            )
        out.print(table)


def _stamp(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"{value!r} is not an ISO 8601 date-time", field=name) from None
    if stamp.tzinfo is None:
        raise InvalidInput(f"{name} needs a UTC offset", field=name)
    return stamp


@member_app.command("expiring")
@handled
def member_expiring(
    member_id: str,
    days: Annotated[int, typer.Option("--days", min=1, max=3660)] = 30,
    db: DbOption = None,
    program: ProgramOption = None,
    as_json: JsonOption = False,
) -> None:
    """A member's points expiring within N days (the points.expiring webhook reminds the brand)."""
    engine = open_engine(db)
    with engine.connect() as conn:
        lp = programs.active(conn, program)
        soon = member_view.expiring(conn, lp, member_id, now=utcnow(), days=days)
    if as_json:
        print_json({"member_id": member_id, "days": days, "expiring": soon})
        return
    for item in soon:
        out.print(item["text"])
    if not soon:
        out.print(f"nothing expires within {days} days")


def register(app: typer.Typer) -> None:
    """Add the mall's commands to the `kinloop` app."""
    app.add_typer(rewards_app, name="rewards")
    app.add_typer(orders_app, name="orders")
    app.add_typer(holds_app, name="holds")
    app.command("redemptions")(handled(redemptions))
