"""The operator console (`/console`): sign-in, and one module per area of work.

Areas: `dashboard` (the numbers), `members` (search, a member's page, adjustments),
`program` (versions, upload, diff, activate), `outlets` (mall, orders, draws, campaigns),
`admin` (webhooks, API keys, operators, the audit log).
"""

from __future__ import annotations

import hmac
import secrets
from typing import Annotated
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import Engine

from kinloop.api.deps import run, state
from kinloop.clock import utcnow
from kinloop.services import operators
from kinloop.services.operators import SESSION_TTL, SignInFailed
from kinloop.web.console.session import COOKIE, Page
from kinloop.web.templating import render

router = APIRouter(prefix="/console", include_in_schema=False)
LOGIN_COOKIE = "kinloop_login"  # double-submit token: a sign-in form must come from this site


def _safe_next(target: str | None) -> str:
    """Where to go after sign-in: a console path, never another site."""
    if not target:
        return "/console"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith("/console") or target.startswith("//"):
        return "/console"
    return target


def _count(engine: Engine) -> int:
    with engine.connect() as conn:
        return operators.count(conn)


@router.get("/login")
async def login_form(request: Request, next: str | None = None) -> Response:
    token = secrets.token_urlsafe(24)
    none_yet = await run(request, _count, state(request).reader) == 0
    response = render(request, "console/login.html", next=_safe_next(next), login_token=token, none_yet=none_yet)
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", path="/console")
    return response


def _sign_in(engine: Engine, username: str, password: str) -> operators.Session:
    with engine.begin() as conn:
        return operators.sign_in(conn, username, password, now=utcnow())


@router.post("/login")
async def login(
    request: Request,
    username: Annotated[str, Form()],
    password: Annotated[str, Form()],
    login_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/console",
) -> Response:
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    target = _safe_next(next)
    if not cookie or not hmac.compare_digest(cookie, login_token):
        return render(
            request,
            "console/login.html",
            status_code=403,
            next=target,
            login_token=cookie,
            error="this sign-in form has expired; reload the page and try again",
            username=username,
        )
    try:
        session = await run(request, _sign_in, state(request).engine, username, password)
    except SignInFailed as exc:
        return render(
            request,
            "console/login.html",
            status_code=401,
            next=target,
            login_token=cookie,
            error=exc.detail,
            username=username,
        )
    response = RedirectResponse(target, status_code=303)
    assert session.token is not None
    response.set_cookie(
        COOKIE,
        session.token,
        max_age=int(SESSION_TTL.total_seconds()),
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
        path="/",
    )
    response.delete_cookie(LOGIN_COOKIE, path="/console")
    return response


def _end(engine: Engine, session_id: int) -> None:
    with engine.begin() as conn:
        operators.sign_out(conn, session_id, now=utcnow())


@router.post("/logout")
async def logout(request: Request, page: Page) -> Response:
    await run(request, _end, state(request).engine, page.session.id)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


def _choose(engine: Engine, session_id: int, key: str) -> None:
    with engine.begin() as conn:
        operators.choose_program(conn, session_id, key)


@router.post("/program-choice")
async def choose_program(request: Request, page: Page, program: Annotated[str, Form()]) -> Response:
    if program in page.program_keys:
        await run(request, _choose, state(request).engine, page.session.id, program)
    return RedirectResponse(_safe_next(request.headers.get("referer", "").partition(request.url.netloc)[2]), 303)


@router.get("")
async def home(page: Page) -> Response:
    return RedirectResponse("/console/dashboard", status_code=303)


def _include_areas() -> None:
    from kinloop.web.console import admin, dashboard, members, outlets, program

    for area in (dashboard, members, program, outlets, admin):
        router.include_router(area.router)


_include_areas()
