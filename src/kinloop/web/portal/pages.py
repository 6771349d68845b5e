"""The portal's pages: the home (card, check-in, tasks, badges, mall, history, leaderboards,
red envelopes), the full history, and the changes a member makes from them.

A change renders the home page again, with what happened (or why not) next to the form it
came from: htmx swaps that section and the card in place, a plain form shows the whole page.
Refused changes answer 422 and write nothing (each runs in a savepoint of the request's
transaction, rolled back on refusal).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Connection

from kinloop.api.deps import Conn, ReadConn, program_of
from kinloop.clock import utcnow
from kinloop.domain.errors import IdempotencyConflict, InvalidInput, KinloopError, NotFound, Refused, UnknownReward
from kinloop.services import checkin as checkin_svc
from kinloop.services import envelopes, orders, portal
from kinloop.services.programs import LoadedProgram
from kinloop.web.errors import PortalLinkRequired
from kinloop.web.portal.access import COOKIE, Member, PortalMember, check_token, secret
from kinloop.web.templating import render

router = APIRouter(prefix="/portal", include_in_schema=False)

RewardKey = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
# A fresh value in every rendered form: a double click sends it twice, and the second is a replay.
Click = Annotated[str, Form(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
EnvelopeKey = Annotated[str, Form(min_length=8, max_length=64, pattern=r"^p-[A-Za-z0-9_-]+$")]
Text = Annotated[str, Form(max_length=200)]
NO_STORE = {"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"}


@dataclass(frozen=True, slots=True)
class Redeemed:
    """What the member just redeemed, shown at the top of the mall."""

    name: str
    text: str
    codes: tuple[str, ...]
    replayed: bool


def _click() -> str:
    return secrets.token_urlsafe(12)


def _page(
    request: Request,
    conn: Connection,
    who: PortalMember,
    loaded: LoadedProgram,
    *,
    status: int = 200,
    **shown: Any,
) -> HTMLResponse:
    home = portal.home(conn, loaded, who.member_id, now=utcnow())
    response = render(
        request,
        "portal/home.html",
        status_code=status,
        me=who,
        home=home,
        program_name=home.card.program_name,
        clicks={o.key: _click() for o in home.offers},
        envelope_key=f"p-{secrets.token_hex(8)}",
        errors=shown.pop("errors", {}),
        values=shown.pop("values", {}),
        **shown,
    )
    response.headers.update(NO_STORE)
    return response


# --- entering and leaving ---------------------------------------------------------------------


@router.get("/enter")
async def enter(request: Request, token: Annotated[str, Query(max_length=4096)] = "") -> Response:
    """Check a member link's token, keep it in a cookie, and send the browser on to /portal
    (so the token leaves the address bar and the history)."""
    if not token:
        raise PortalLinkRequired("this link has no member token; open the portal again from the app")
    check_token(await secret(request), token)
    response = RedirectResponse("/portal", status_code=303, headers=NO_STORE)
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/portal",
    )
    return response


@router.post("/leave")
def leave(request: Request, who: Member) -> Response:
    """Forget the member on this browser (the link still works until it expires)."""
    del who
    response = render(request, "portal/left.html")
    response.delete_cookie(COOKIE, path="/portal")
    response.headers.update(NO_STORE)
    return response


# --- pages ------------------------------------------------------------------------------------


@router.get("")
def home(request: Request, who: Member, conn: ReadConn) -> Response:
    """The member's home: one scrolling page, each section linkable."""
    return _page(request, conn, who, program_of(conn, who.principal))


@router.get("/history")
def history(
    request: Request,
    who: Member,
    conn: ReadConn,
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> Response:
    """The member's ledger entries in the program's words, newest first, a page at a time."""
    loaded = program_of(conn, who.principal)
    lines, more = portal.history(conn, loaded, who.member_id, before=before)
    template = "portal/_history_rows.html" if request.headers.get("hx-request") else "portal/history.html"
    response = render(
        request, template, me=who, program_name=loaded.program.name, lines=lines, more=more, first=before is None
    )
    response.headers.update(NO_STORE)
    return response


# --- changes ----------------------------------------------------------------------------------


@router.post("/check-in")
def check_in(request: Request, who: Member, conn: Conn) -> Response:
    """Check in for today (once a day: a second check-in shows the first one's result)."""
    loaded = program_of(conn, who.principal)
    now = utcnow()
    outcome = checkin_svc.check_in(conn, loaded, who.member_id, at=now, now=now)
    said = str((outcome.get("checkin") or {}).get("text", "checked in"))
    notice = f"{said[:1].upper()}{said[1:]}."
    if outcome["status"] == "duplicate":
        notice = "You have already checked in today."
    return _page(request, conn, who, loaded, checked_in=notice)


@router.post("/mall/{reward_key}/redeem")
def redeem(request: Request, who: Member, conn: Conn, reward_key: RewardKey, click: Click) -> Response:
    """Redeem one unit of a reward; the click's value makes a repeated submit a replay."""
    loaded = program_of(conn, who.principal)
    try:
        with conn.begin_nested():
            order = orders.place(
                conn,
                loaded,
                who.member_id,
                reward_key,
                quantity=1,
                key=f"portal:{who.member_id}:{click}",
                now=utcnow(),
                actor=f"portal:{who.member_id}",
            )
    except (Refused, InvalidInput, IdempotencyConflict, UnknownReward) as exc:
        return _page(request, conn, who, loaded, status=422, errors={"mall": {reward_key: exc.detail}})
    shown = order.as_json(loaded.program)
    done = Redeemed(order.reward.name, shown["text"], order.codes, order.replayed)
    return _page(request, conn, who, loaded, redeemed=done)


_ENVELOPE_FIELDS = {"to": "to", "member_id": "to", "amount": "amount", "shares": "shares", "message": "message"}


@router.post("/envelopes")
def send_envelope(
    request: Request,
    who: Member,
    conn: Conn,
    key: EnvelopeKey,
    amount: Text = "",
    kind: Annotated[str, Form(pattern=r"^(one|group)$")] = "one",
    to: Text = "",
    shares: Text = "",
    message: Text = "",
) -> Response:
    """Send a red envelope to one member, or a group envelope that others claim with its code."""
    loaded = program_of(conn, who.principal)
    values = {"amount": amount, "kind": kind, "to": to, "shares": shares, "message": message}
    problems: dict[str, str] = {}
    count: int | None = None
    if kind == "group":
        if not shares.strip().isdigit():
            problems["shares"] = "how many members may claim it: a whole number"
        else:
            count = int(shares)
    elif not to.strip():
        problems["to"] = "whom to send it to: their member id"
    if not amount.strip():
        problems["amount"] = "how much to send"
    if problems:
        return _page(request, conn, who, loaded, status=422, errors={"envelope": problems}, values={"envelope": values})
    try:
        with conn.begin_nested():
            sent = envelopes.send(
                conn,
                loaded,
                who.member_id,
                key=key,
                amount=amount.strip(),
                to=to.strip() if kind == "one" else None,
                shares=count,
                message=message.strip() or None,
                now=utcnow(),
                actor=f"portal:{who.member_id}",
            )
    except (Refused, InvalidInput, NotFound, IdempotencyConflict) as exc:
        where = _ENVELOPE_FIELDS.get(exc.field or "", "form")
        return _page(
            request,
            conn,
            who,
            loaded,
            status=422,
            errors={"envelope": {where: exc.detail}},
            values={"envelope": values},
        )
    return _page(request, conn, who, loaded, sent=portal.sent_text(loaded.program, sent))


@router.post("/envelopes/claim")
def claim_envelope(
    request: Request, who: Member, conn: Conn, envelope: Annotated[str, Form(max_length=200)] = ""
) -> Response:
    """Claim a share of a group envelope by the code its sender shared."""
    loaded = program_of(conn, who.principal)
    code = envelope.strip()
    if not code:
        return _page(
            request, conn, who, loaded, status=422, errors={"claim": {"envelope": "the envelope's code, as shared"}}
        )
    try:
        with conn.begin_nested():
            got = envelopes.claim(conn, loaded, code, who.member_id, now=utcnow())
    except KinloopError as exc:
        if not isinstance(exc, Refused | InvalidInput | NotFound):
            raise
        return _page(
            request,
            conn,
            who,
            loaded,
            status=422,
            errors={"claim": {"envelope": exc.detail}},
            values={"claim": {"envelope": code}},
        )
    return _page(request, conn, who, loaded, claimed=got.as_json(loaded.program))
