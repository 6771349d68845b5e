"""Console area: members — search, a member's page, the timeline and manual adjustments."""

from __future__ import annotations

import contextlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Engine

from kinloop.api.deps import run, state
from kinloop.api.schemas import NO_NUL
from kinloop.clock import utcnow
from kinloop.domain.amounts import to_minor
from kinloop.domain.errors import IdempotencyConflict, InvalidInput, Refused
from kinloop.domain.program import Program
from kinloop.services import ledger, member_view, members, orders, programs
from kinloop.services import tiers as tier_svc
from kinloop.web.console.session import Actor, ConsolePage, Page
from kinloop.web.templating import render

router = APIRouter()

MemberId = Annotated[str, Path(min_length=1, max_length=200, pattern=NO_NUL)]
PAGE_SIZE = 25
TIMELINE_SIZE = 20
ORDERS_SHOWN = 20
# The fields of the adjustment form; an error on any other field is shown above the form.
ADJUST_FIELDS = ("currency", "amount", "reason")


def _partial(request: Request) -> bool:
    """Whether htmx asked for a part of the page (a full load or a history restore gets it all)."""
    return bool(request.headers.get("hx-request")) and not request.headers.get("hx-history-restore-request")


# --- search -----------------------------------------------------------------------------------


def _tier_name(program: Program, key: str | None) -> str:
    tier = program.ladder.get(key) if program.ladder and key else None
    return tier.name if tier else (key or "–")


def _search(engine: Engine, program_key: str | None, q: str, after: str | None) -> dict[str, Any]:
    with engine.connect() as conn:
        loaded = programs.active(conn, program_key)
        program = loaded.program
        currency = members.main_currency(program)
        found, next_after = members.search(
            conn, loaded.program_id, q, currency=currency.key, after=after, limit=PAGE_SIZE
        )
    rows = [
        {
            "member_id": f.member_id,
            "name": f.profile.get("display_name") or "",
            "tier": _tier_name(program, f.tier),
            "balance": currency.display(f.balance),
        }
        for f in found
    ]
    return {"rows": rows, "next_after": next_after, "currency": currency.name}


@router.get("/members")
async def search(
    request: Request,
    page: Page,
    q: Annotated[str, Query(max_length=200, pattern=NO_NUL)] = "",
    after: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
) -> HTMLResponse:
    """Members by id prefix or by profile words, a page at a time (htmx swaps the results)."""
    found = await run(request, _search, state(request).reader, page.program_key, q, after or None)
    name = "console/member_results.html" if _partial(request) else "console/members.html"
    return render(request, name, page=page, q=q, after=after, **found)


# --- one member -------------------------------------------------------------------------------


@dataclass
class AdjustForm:
    """What the adjustment form shows: the values typed and the errors next to them."""

    currency: str = ""
    amount: str = ""
    reason: str = ""
    key: str = field(default_factory=lambda: f"console-{secrets.token_urlsafe(18)}")
    errors: dict[str, str] = field(default_factory=dict)


def _percent(program: Program, view: member_view.MemberView) -> int | None:
    """How far the member is towards the next tier, in percent of its threshold."""
    ladder = program.ladder
    if ladder is None or view.next_tier is None:
        return None
    nxt = ladder.get(view.next_tier["key"])
    if nxt is None or not nxt.threshold:
        return None
    missing = to_minor(view.next_tier["missing"], program.currencies[ladder.currency].decimals)
    return max(0, min(100, (nxt.threshold - missing) * 100 // nxt.threshold))


def _member(
    engine: Engine, program_key: str | None, member_id: str, now: datetime, adjusted: int | None
) -> dict[str, Any]:
    with engine.connect() as conn:
        loaded = programs.active(conn, program_key)
        program = loaded.program
        view = member_view.show(conn, loaded, member_id, now=now)
        history = tier_svc.history(conn, loaded, member_id) if program.ladder else []
        items, cursor = members.timeline(conn, loaded, member_id, before=None, limit=TIMELINE_SIZE)
        placed, more_orders = orders.listing(
            conn, loaded, member_id=member_id, status=None, before=None, limit=ORDERS_SHOWN
        )
        flash = None
        if adjusted is not None:
            entry = members.entry_of(conn, loaded, member_id, adjusted)
            if entry is not None and entry["kind"] == "adjustment":
                currency = program.currencies[entry["currency"]]
                flash = (
                    f"Adjustment recorded: {entry['signed_text']} ({entry['reason']}). "
                    f"{currency.name} balance now {view.display[currency.key]}."
                )
    return {
        "member": view,
        "percent": _percent(program, view),
        "currencies": [(c.key, c.name, c.decimals) for c in program.currencies.values()],
        "main_currency": members.main_currency(program).key,
        "tier_history": history,
        "timeline": items,
        "cursor": cursor,
        "orders": [o.as_json(program) for o in placed],
        "more_orders": more_orders is not None,
        "flash": flash,
    }


async def _member_page(
    request: Request,
    page: ConsolePage,
    member_id: str,
    *,
    form: AdjustForm | None = None,
    adjusted: int | None = None,
    status_code: int = 200,
) -> HTMLResponse:
    data = await run(request, _member, state(request).reader, page.program_key, member_id, utcnow(), adjusted)
    if form is None:
        form = AdjustForm(currency=data["main_currency"])
    return render(request, "console/member.html", status_code=status_code, page=page, form=form, **data)


@router.get("/members/{member_id}")
async def member(
    request: Request, page: Page, member_id: MemberId, adjusted: Annotated[int | None, Query(ge=1)] = None
) -> HTMLResponse:
    """A member's balances, tier and progress, timeline, tier history, badges, orders and privileges."""
    return await _member_page(request, page, member_id, adjusted=adjusted)


def _timeline(engine: Engine, program_key: str | None, member_id: str, before: str | None) -> dict[str, Any]:
    with engine.connect() as conn:
        loaded = programs.active(conn, program_key)
        items, cursor = members.timeline(conn, loaded, member_id, before=before, limit=TIMELINE_SIZE)
    return {"timeline": items, "cursor": cursor}


@router.get("/members/{member_id}/timeline")
async def timeline(
    request: Request,
    page: Page,
    member_id: MemberId,
    before: Annotated[str | None, Query(max_length=80, pattern=NO_NUL)] = None,
) -> HTMLResponse:
    """The next page of a member's timeline ("load more"; a page of its own without htmx)."""
    found = await run(request, _timeline, state(request).reader, page.program_key, member_id, before)
    name = "console/member_timeline.html" if _partial(request) else "console/member_timeline_page.html"
    return render(request, name, page=page, member_id=member_id, **found)


def _adjust(
    engine: Engine, program_key: str | None, member_id: str, form: AdjustForm, actor: str, now: datetime
) -> ledger.Movement:
    with engine.begin() as conn:  # an error rolls everything back: no partial write
        loaded = programs.active(conn, program_key)
        members.get(conn, loaded.program_id, member_id)  # the console adjusts known members only
        return ledger.adjust(
            conn, loaded, member_id, form.currency, form.amount.strip(), reason=form.reason.strip(),
            actor=actor, key=form.key, now=now,
        )  # fmt: skip


@router.post("/members/{member_id}/adjustments")
async def adjust(
    request: Request,
    page: Actor,
    member_id: MemberId,
    currency: Annotated[str, Form(max_length=64)] = "",
    amount: Annotated[str, Form(max_length=64)] = "",
    reason: Annotated[str, Form(max_length=1000)] = "",
    key: Annotated[str, Form(max_length=200)] = "",
) -> Response:
    """A manual credit or debit with a required reason, audited as `console:<username>`."""
    form = AdjustForm(currency, amount, reason, key or AdjustForm().key)
    if not amount.strip():
        form.errors["amount"] = "enter an amount: positive to credit, negative to debit"
    if not reason.strip():
        form.errors["reason"] = "a reason is required for a manual adjustment"
    if not form.errors:
        st = state(request)
        try:
            async with st.writer or contextlib.nullcontext():
                moved = await run(
                    request, _adjust, st.engine, page.program_key, member_id, form,
                    f"console:{page.operator.username}", utcnow(),
                )  # fmt: skip
        except (InvalidInput, Refused, IdempotencyConflict) as exc:
            form.errors[exc.field if exc.field in ADJUST_FIELDS else "form"] = exc.detail
        else:
            target = f"/console/members/{quote(member_id, safe='')}?adjusted={moved.entry_id}"
            return RedirectResponse(target, status_code=303)
    return await _member_page(request, page, member_id, form=form, status_code=422)
