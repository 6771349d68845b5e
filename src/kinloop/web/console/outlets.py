"""Console area: the points outlets — the mall (rewards, stock, prices, codes), the order queue
and its state actions, draws, and campaigns.

Handlers are adapters: they read the form, call the same services as the API and the CLI
(`services/mall.py`, `services/orders.py`, `services/draws.py`, `services/campaigns.py`), write
the audit entry in the same transaction, and render. A refused change is shown next to its
field (status 422, or 409 for an order whose state does not allow the action) and writes nothing.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, TypeVar
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Connection, Engine

from kinloop.api.deps import run, state
from kinloop.clock import utcnow
from kinloop.domain.errors import IllegalTransition, InvalidInput, Issue, KinloopError
from kinloop.domain.orders import Action, actions_from
from kinloop.domain.program import Program
from kinloop.domain.rewards import price_at
from kinloop.services import audit, campaigns, draws, mall, orders, programs
from kinloop.services.programs import LoadedProgram
from kinloop.web.console.session import Actor, Configurer, ConsolePage, Page
from kinloop.web.templating import render

router = APIRouter()
T = TypeVar("T")

ORDER_STATES = ("placed", "confirmed", "fulfilled", "completed", "cancelled", "refunded")
ORDERS_PER_PAGE = 25
NO_NUL = r"^[^\x00]*$"  # PostgreSQL cannot store (or compare) text with NUL characters
Key = Annotated[str, Path(min_length=1, max_length=200, pattern=NO_NUL)]
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]
# htmx leaves error replies unswapped; a refused action's reply is the row or panel with the
# reason in it, so it is swapped in like a success.
SWAP_REFUSALS = (
    "if (event.detail.xhr.status === 409 || event.detail.xhr.status === 422)"
    " { event.detail.shouldSwap = true; event.detail.isError = false; }"
)


# --- transactions ---------------------------------------------------------------------------
def _transact(engine: Engine, fn: Callable[..., T], *args: Any) -> T:
    with engine.begin() as conn:
        return fn(conn, *args)


def _look(engine: Engine, fn: Callable[..., T], *args: Any) -> T:
    with engine.connect() as conn:
        return fn(conn, *args)


async def write(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """`fn(conn, *args)` in a transaction of its own, committed when it returns and rolled back
    when it raises: a refused change writes nothing, and the page can still say why."""
    st = state(request)
    async with st.writer or contextlib.nullcontext():
        return await run(request, _transact, st.engine, fn, *args)


async def read(request: Request, fn: Callable[..., T], *args: Any) -> T:
    """`fn(conn, *args)` on the read engine."""
    return await run(request, _look, state(request).reader, fn, *args)


def loaded_of(conn: Connection, page: ConsolePage) -> LoadedProgram:
    """The active version of the program the console works on."""
    return programs.active(conn, page.program_key)


def actor_of(page: ConsolePage) -> str:
    """How the audit log names an operator's changes."""
    return f"console:{page.operator.username}"


def see(request: Request, url: str) -> Response:
    """After a change: a plain form is redirected to `url`; htmx is told to load it."""
    if request.headers.get("hx-request") == "true":
        return Response(status_code=200, headers={"HX-Redirect": url})
    return RedirectResponse(url, status_code=303)


def errors_of(exc: KinloopError) -> dict[str, str]:
    """A domain error as the form errors of its field."""
    return {exc.field or "form": exc.detail}


# --- the mall -------------------------------------------------------------------------------
def _local_input(when: datetime, tz: ZoneInfo) -> str:
    """A time as a `datetime-local` input shows it: the program's wall clock."""
    return when.astimezone(tz).strftime("%Y-%m-%dT%H:%M")


def _reward_view(stored: mall.StoredReward, program: Program, now: datetime) -> dict[str, Any]:
    r = stored.reward
    view = mall.as_json(stored, program, now)
    currency = program.currencies.get(r.currency)

    def amount(minor: int) -> str:
        return currency.display(minor) if currency else str(minor)

    tz = program.timezone
    view["price_text"] = amount(price_at(r, now).points)
    view["regular_text"] = amount(r.price)
    view["promo_rows"] = [
        {
            "starts": p.starts_at.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
            "ends": p.ends_at.astimezone(tz).strftime("%Y-%m-%d %H:%M"),
            "starts_input": _local_input(p.starts_at, tz),
            "ends_input": _local_input(p.ends_at, tz),
            "price_text": amount(p.price),
            "price": view["promos"][i]["price"],
            "state": "running" if p.covers(now) else ("over" if p.ends_at <= now else "upcoming"),
        }
        for i, p in enumerate(r.promos)
    ]
    view["limit_text"] = (
        None
        if r.limit is None
        else f"{r.limit.count} in all"
        if r.limit.period == "lifetime"
        else f"{r.limit.count} per {r.limit.period}"
    )
    view["codes_left"] = stored.codes_left
    view["timezone"] = str(tz)
    return view


def _mall(conn: Connection, page: ConsolePage, now: datetime) -> list[dict[str, Any]]:
    loaded = loaded_of(conn, page)
    return [_reward_view(r, loaded.program, now) for r in mall.listing(conn, loaded.program_id, include_hidden=True)]


@router.get("/mall")
async def mall_page(request: Request, page: Page) -> HTMLResponse:
    rewards = await read(request, _mall, page, utcnow())
    return render(request, "console/mall.html", page=page, rewards=rewards)


def _reward(conn: Connection, page: ConsolePage, key: str, now: datetime) -> dict[str, Any]:
    loaded = loaded_of(conn, page)
    return _reward_view(mall.show(conn, loaded.program_id, key), loaded.program, now)


async def _reward_page(
    request: Request,
    page: ConsolePage,
    key: Key,
    *,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
    form: dict[str, Any] | None = None,
    flash: str | None = None,
    codes_text: str = "",
) -> HTMLResponse:
    reward = await read(request, _reward, page, key, utcnow())
    given = form["promos"] if form else [(p["starts_input"], p["ends_input"], p["price"]) for p in reward["promo_rows"]]
    return render(
        request,
        "console/reward.html",
        status_code=status_code,
        page=page,
        reward=reward,
        errors=errors or {},
        form=form,
        flash=flash,
        codes_text=codes_text,
        promo_inputs=[*given, ("", "", "")],
    )


SAVED = {"saved": "Saved.", "unchanged": "Nothing changed."}


@router.get("/mall/{key}")
async def reward_page(request: Request, page: Page, key: Key, done: str | None = None) -> HTMLResponse:
    return await _reward_page(request, page, key, flash=SAVED.get(done or ""))


_PROMO_PATH = re.compile(r"^promos\[(\d+)\]")


def _changes(
    program: Program,
    price: str,
    stock: str,
    starts: list[str],
    ends: list[str],
    prices: list[str],
    active: bool,
    hidden: bool,
) -> tuple[dict[str, Any], dict[str, str], list[int]]:
    """The reward fields an edit form asks for, the form's own errors, and which form row each
    promo came from (rows left blank are dropped)."""
    errors: dict[str, str] = {}
    changes: dict[str, Any] = {"price": price.strip(), "active": active, "hidden": hidden}
    text = stock.strip()
    if not text:
        changes["stock"] = None
    elif text.isdigit():
        changes["stock"] = int(text)
    else:
        errors["stock"] = f"a whole number of units, or empty for unlimited (got {text!r})"
    promos: list[dict[str, str]] = []
    rows: list[int] = []
    for i, (s, e, p) in enumerate(zip(starts, ends, prices, strict=False)):
        if not (s.strip() or e.strip() or p.strip()):
            continue
        promo: dict[str, str] = {"price": p.strip()}
        for name, value in (("starts_at", s), ("ends_at", e)):
            try:
                promo[name] = datetime.fromisoformat(value.strip()).replace(tzinfo=program.timezone).isoformat()
            except ValueError:
                errors[f"promos[{i}].{name}"] = "a date and time, or leave the whole row empty"
        if not p.strip():
            errors[f"promos[{i}].price"] = "the promotional price, or leave the whole row empty"
        promos.append(promo)
        rows.append(i)
    changes["promos"] = promos
    return changes, errors, rows


def _at_row(path: str, rows: list[int]) -> str:
    """A domain issue's path with the promo index of the form row it came from."""
    found = _PROMO_PATH.match(path)
    if found is None or int(found.group(1)) >= len(rows):
        return path
    return f"promos[{rows[int(found.group(1))]}]" + path[found.end() :]


def _issue_errors(issues: list[Issue], rows: list[int]) -> dict[str, str]:
    errors: dict[str, str] = {}
    for issue in issues:
        errors.setdefault(_at_row(issue.path, rows), issue.message)
    return errors


@dataclass(frozen=True, slots=True)
class _Edit:
    price: str
    stock: str
    starts: list[str]
    ends: list[str]
    prices: list[str]
    active: bool
    hidden: bool


def _edit_reward(conn: Connection, page: ConsolePage, key: str, edit: _Edit, now: datetime) -> dict[str, Any]:
    """Check the edit, and when it holds, save it and audit it; returns the errors and what changed."""
    loaded = loaded_of(conn, page)
    stored = mall.find(conn, loaded.program_id, key, lock=True)
    changes, errors, rows = _changes(
        loaded.program, edit.price, edit.stock, edit.starts, edit.ends, edit.prices, edit.active, edit.hidden
    )
    if errors:
        return {"errors": errors}
    revision = mall.revise(stored, loaded.program, changes)
    if revision.issues:
        return {"errors": _issue_errors(revision.issues, rows)}
    if not revision.changed:
        return {"errors": {}, "changed": {}}
    mall.put(conn, loaded, key, revision.fields, now=now)
    audit.record(
        conn,
        loaded.program_id,
        actor=actor_of(page),
        action="reward.update",
        target=key,
        details={"changed": revision.changed},
        now=now,
    )
    return {"errors": {}, "changed": revision.changed}


@router.post("/mall/{key}")
async def edit_reward(
    request: Request,
    page: Configurer,
    key: Key,
    price: Annotated[str, Form(max_length=40, pattern=NO_NUL)] = "",
    stock: Annotated[str, Form(max_length=20, pattern=NO_NUL)] = "",
    promo_starts: Annotated[list[str], Form()] = [],  # noqa: B006 (FastAPI copies defaults)
    promo_ends: Annotated[list[str], Form()] = [],  # noqa: B006
    promo_price: Annotated[list[str], Form()] = [],  # noqa: B006
    active: Annotated[str | None, Form()] = None,
    hidden: Annotated[str | None, Form()] = None,
) -> Response:
    edit = _Edit(price, stock, promo_starts, promo_ends, promo_price, active is not None, hidden is not None)
    form: dict[str, Any] = {"price": price, "stock": stock, "active": edit.active, "hidden": edit.hidden}
    form["promos"] = list(zip(promo_starts, promo_ends, promo_price, strict=False))
    try:
        outcome = await write(request, _edit_reward, page, key, edit, utcnow())
    except InvalidInput as exc:  # the stock below what is sold already, found under the row lock
        outcome = {"errors": errors_of(exc)}
    if outcome["errors"]:
        return await _reward_page(request, page, key, status_code=422, errors=outcome["errors"], form=form)
    done = "saved" if outcome["changed"] else "unchanged"
    return RedirectResponse(f"/console/mall/{key}?done={done}", status_code=303)


def _upload(conn: Connection, page: ConsolePage, key: str, lines: list[str], now: datetime) -> dict[str, int]:
    loaded = loaded_of(conn, page)
    given = [c.strip() for c in lines if c.strip()]
    outcome = mall.upload_codes(conn, loaded.program_id, key, given, now=now)
    outcome["repeated"] = len(given) - len(set(given))  # the same code twice in one upload
    audit.record(
        conn,
        loaded.program_id,
        actor=actor_of(page),
        action="reward.codes",
        target=key,
        details={"added": outcome["added"], "refused": len(given) - outcome["added"]},
        now=now,
    )
    return outcome


@router.post("/mall/{key}/codes")
async def upload_codes(
    request: Request, page: Configurer, key: Key, codes: Annotated[str, Form(max_length=5_000_000)] = ""
) -> HTMLResponse:
    try:
        outcome = await write(request, _upload, page, key, codes.splitlines(), utcnow())
    except InvalidInput as exc:
        return await _reward_page(request, page, key, status_code=422, errors={"codes": exc.detail}, codes_text=codes)
    refused = outcome["skipped"] + outcome["repeated"]
    flash = f"{outcome['added']:,} codes added; {outcome['free']:,} free in the pool."
    if refused:
        flash += f" {refused:,} refused as duplicates (already in the pool, or given twice)."
    return await _reward_page(request, page, key, flash=flash)


# --- orders ---------------------------------------------------------------------------------
def _order_view(order: orders.Order, program: Program) -> dict[str, Any]:
    o = order.row
    currency = program.currencies.get(o.currency)

    def amount(minor: int) -> str:
        return currency.display(minor) if currency else str(minor)

    return {
        "id": order.id,
        "member_id": order.member_id,
        "reward_key": order.reward.key,
        "reward_name": order.reward.name,
        "kind": order.reward.kind,
        "quantity": o.quantity,
        "points_text": amount(o.points),
        "unit_text": amount(o.unit_price),
        "cash": f"{o.cash} {o.cash_currency}" if o.cash is not None else None,
        "promo": o.promo,
        "status": o.status,
        "shipping_reference": o.shipping_reference,
        "codes": list(order.codes),
        "history": list(o.history or ()),
        "placed_at": o.placed_at,
        "updated_at": o.updated_at,
        "actions": actions_from(o.status),
        "needs_reference": order.reward.kind == "physical",
    }


def _orders(
    conn: Connection, page: ConsolePage, status: str | None, before: int | None
) -> tuple[list[dict[str, Any]], str | None]:
    loaded = loaded_of(conn, page)
    found, cursor = orders.listing(conn, loaded, member_id=None, status=status, before=before, limit=ORDERS_PER_PAGE)
    return [_order_view(o, loaded.program) for o in found], cursor


@router.get("/orders")
async def orders_page(
    request: Request,
    page: Page,
    state_: Annotated[str, Query(alias="state", max_length=20)] = "",
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> HTMLResponse:
    if state_ and state_ not in ORDER_STATES:
        raise InvalidInput(f"unknown state {state_!r} (one of {', '.join(ORDER_STATES)})", field="state")
    rows, cursor = await read(request, _orders, page, state_ or None, before)
    return render(
        request,
        "console/orders.html",
        page=page,
        orders=rows,
        states=ORDER_STATES,
        chosen=state_,
        next_cursor=cursor,
        first_page=before is None,
        swap_refusals=SWAP_REFUSALS,
    )


def _order(conn: Connection, page: ConsolePage, order_id: int) -> dict[str, Any]:
    loaded = loaded_of(conn, page)
    return _order_view(orders.get(conn, loaded, order_id), loaded.program)


@router.get("/orders/{order_id}")
async def order_page(request: Request, page: Page, order_id: Id, done: str | None = None) -> HTMLResponse:
    order = await read(request, _order, page, order_id)
    flash = f"Order {order_id} is {order['status']} now." if done else None
    return render(
        request,
        "console/order.html",
        page=page,
        order=order,
        errors={},
        form={},
        flash=flash,
        swap_refusals=SWAP_REFUSALS,
    )


@dataclass(frozen=True, slots=True)
class _Move:
    action: Action
    shipping_reference: str | None
    reason: str | None


def _transition(conn: Connection, page: ConsolePage, order_id: int, move: _Move, now: datetime) -> dict[str, Any]:
    loaded = loaded_of(conn, page)
    before = orders.get(conn, loaded, order_id).status
    order = orders.transition(
        conn,
        loaded,
        order_id,
        move.action,
        shipping_reference=move.shipping_reference,
        reason=move.reason,
        actor=actor_of(page),
        now=now,
    )
    details: dict[str, Any] = {"from": before, "to": order.status}
    if move.shipping_reference and move.action == "fulfil":
        details["shipping_reference"] = move.shipping_reference
    audit.record(
        conn,
        loaded.program_id,
        actor=actor_of(page),
        action=f"order.{move.action}",
        target=str(order_id),
        reason=move.reason,
        details=details,
        now=now,
    )
    return _order_view(order, loaded.program)


@router.post("/orders/{order_id}/{action}")
async def move_order(
    request: Request,
    page: Actor,
    order_id: Id,
    action: Action,
    shipping_reference: Annotated[str, Form(max_length=200, pattern=NO_NUL)] = "",
    reason: Annotated[str, Form(max_length=200, pattern=NO_NUL)] = "",
    view: Annotated[str, Form(max_length=10, pattern=NO_NUL)] = "page",
) -> Response:
    """Move an order on or back; htmx gets the row or panel again, a plain form the order page."""
    move = _Move(action, shipping_reference.strip() or None, reason.strip() or None)
    status_code, errors = 200, {}
    try:
        order = await write(request, _transition, page, order_id, move, utcnow())
    except (IllegalTransition, InvalidInput) as exc:
        status_code = 409 if isinstance(exc, IllegalTransition) else 422
        errors = {exc.field or "action": exc.detail}
        order = await read(request, _order, page, order_id)
    htmx = request.headers.get("hx-request") == "true"
    if status_code == 200 and not htmx:
        return RedirectResponse(f"/console/orders/{order_id}?done={action}", status_code=303)
    template = {"row": "console/orders_row.html", "panel": "console/order_panel.html"}.get(view, "console/order.html")
    if not htmx:
        template = "console/order.html"
    form = {"shipping_reference": shipping_reference, "reason": reason}
    flash = f"Order {order_id} is {order['status']} now." if status_code == 200 else None
    return render(
        request,
        template,
        status_code=status_code,
        page=page,
        order=order,
        errors=errors,
        failed=action if errors else None,
        form=form,
        flash=flash,
        swap_refusals=SWAP_REFUSALS,
    )


# --- draws ----------------------------------------------------------------------------------
def _draw_rows(conn: Connection, page: ConsolePage, now: datetime) -> list[dict[str, Any]]:
    loaded = loaded_of(conn, page)
    figures = {s["draw"]: s for s in draws.stats(conn, loaded, now=now)}
    return [_draw_view(d, figures.get(d["key"], {}), loaded.program) for d in draws.listing(conn, loaded, now=now)]


def _draw_view(view: dict[str, Any], figures: dict[str, Any], program: Program) -> dict[str, Any]:
    currency = program.currencies[view["currency"]]
    given = figures.get("prizes_given", {})
    prizes = [
        {
            **p,
            "given": given.get(p["key"], 0),
            "percent": f"{Decimal(p['probability']) * 100:.4g} %",
            "stock_text": "unlimited" if p["stock"] is None else f"{p['stock']:,} left",
        }
        for p in view["prizes"]
    ]
    return {
        **view,
        "prizes": prizes,
        "entrants": figures.get("entrants", 0),
        "collected_text": currency.display(figures.get("collected", 0)),
        "paid_text": currency.display(figures.get("paid_out", 0)),
        "expected_text": currency.display(view["expected_cost"]["per_entry"]),
        "cost_per_entry": figures.get("cost_per_entry", "0"),
        "given_total": sum(n for k, n in given.items() if not _is_loss(view, k)),
    }


def _is_loss(view: dict[str, Any], key: str) -> bool:
    return any(p["key"] == key and p["kind"] == "nothing" for p in view["prizes"])


@router.get("/draws")
async def draws_page(request: Request, page: Page) -> HTMLResponse:
    rows = await read(request, _draw_rows, page, utcnow())
    return render(request, "console/draws.html", page=page, draws=rows)


def _draw(conn: Connection, page: ConsolePage, key: str, now: datetime) -> dict[str, Any]:
    loaded = loaded_of(conn, page)
    view = draws.show(conn, loaded, key, now=now)
    figures = next((s for s in draws.stats(conn, loaded, now=now) if s["draw"] == key), {})
    out = _draw_view(view, figures, loaded.program)
    out["problems"] = None
    if view["seed"] is not None:  # revealed: recompute every entry from the public record
        out["problems"] = draws.verify_record(draws.record(conn, loaded, key, now=now))
    return out


@router.get("/draws/{key}")
async def draw_page(request: Request, page: Page, key: Key, done: str | None = None) -> HTMLResponse:
    draw = await read(request, _draw, page, key, utcnow())
    flash = "The draw is closed and its seed revealed." if done == "closed" else None
    return render(request, "console/draw.html", page=page, draw=draw, flash=flash)


def _close(conn: Connection, page: ConsolePage, key: str, now: datetime) -> None:
    draws.close(conn, loaded_of(conn, page), key, now=now, actor=actor_of(page))  # audited by the service


@router.post("/draws/{key}/close")
async def close_draw(request: Request, page: Actor, key: Key) -> Response:
    await write(request, _close, page, key, utcnow())
    return see(request, f"/console/draws/{key}?done=closed")


# --- campaigns ------------------------------------------------------------------------------
CAMPAIGN_GROUPS = (("active", "Running now"), ("upcoming", "Coming up"), ("past", "Past"))


def _campaigns(conn: Connection, page: ConsolePage, now: datetime) -> dict[str, list[dict[str, Any]]]:
    loaded = loaded_of(conn, page)
    program = loaded.program
    groups: dict[str, list[dict[str, Any]]] = {key: [] for key, _ in CAMPAIGN_GROUPS}
    for c in campaigns.listing(conn, loaded.program_id, program, now):
        budget = c["budget"]
        if budget is not None:
            currency = program.currencies[budget["currency"]]
            budget = {
                **budget,
                "spent_text": currency.display(budget["spent"]),
                "total_text": currency.display(budget["total"]),
                "percent": min(100, budget["spent"] * 100 // budget["total"]) if budget["total"] else 100,
            }
        groups.setdefault(c["status"], []).append({**c, "budget": budget})
    return groups


@router.get("/campaigns")
async def campaigns_page(request: Request, page: Page) -> HTMLResponse:
    groups = await read(request, _campaigns, page, utcnow())
    return render(request, "console/campaigns.html", page=page, groups=groups, titles=CAMPAIGN_GROUPS)
