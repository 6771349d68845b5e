"""Who is using the console: the session cookie, the role checks and CSRF protection.

Every console page depends on `signed_in` (or on `allowed(action)`, which adds the role
check). A request that changes something (any method but GET and HEAD) must carry the
session's CSRF token, as the form field `csrf` or the header `X-CSRF-Token` (htmx sends the
header, set once on the page body).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine, select

from kinloop.api.deps import run, state
from kinloop.clock import utcnow
from kinloop.domain.operators import Action
from kinloop.services import operators
from kinloop.services.keys import Forbidden
from kinloop.services.operators import Session
from kinloop.store.tables import programs
from kinloop.web.errors import SignInRequired

COOKIE = "kinloop_console"
SAFE_METHODS = ("GET", "HEAD")


class CsrfRefused(Forbidden):
    """A change without the session's CSRF token: not sent from a console page."""

    code = "csrf_refused"


@dataclass(frozen=True, slots=True)
class ConsolePage:
    """What every console page knows: the session, and the program it works on."""

    session: Session
    program_key: str | None
    program_keys: tuple[str, ...]

    @property
    def operator(self) -> operators.Operator:
        return self.session.operator

    @property
    def csrf(self) -> str:
        return self.session.csrf_token

    def may(self, action: Action) -> bool:
        """Whether the operator may `action` (templates hide buttons they may not press)."""
        return self.session.operator.may(action)


def _lookup(engine: Engine, token: str) -> tuple[Session | None, tuple[str, ...]]:
    with engine.connect() as conn:
        found = operators.session(conn, token, now=utcnow())
        keys = tuple(conn.execute(select(programs.c.key).order_by(programs.c.key)).scalars())
    return found, keys


def _form_token(request: Request) -> str | None:
    # Starlette keeps the parsed form on the request, so the endpoint's Form() reads it again.
    form = getattr(request, "_form", None)
    value = form.get("csrf") if form is not None else None
    return value if isinstance(value, str) else None


async def signed_in(request: Request) -> ConsolePage:
    """The signed-in operator and their program, or SignInRequired (a redirect to sign-in)."""
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInRequired("sign in to use the console")
    found, keys = await run(request, _lookup, state(request).reader, token)
    if found is None:
        raise SignInRequired("your session has ended; sign in again")
    if request.method not in SAFE_METHODS:
        sent = request.headers.get("x-csrf-token")
        if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            await request.form()
            sent = _form_token(request)
        if not sent or not hmac.compare_digest(sent, found.csrf_token):
            raise CsrfRefused("this change did not come from a console page (missing or wrong CSRF token)")
    key = found.program_key if found.program_key in keys else (keys[0] if keys else None)
    return ConsolePage(found, key, keys)


Page = Annotated[ConsolePage, Depends(signed_in)]


def allowed(action: Action) -> Callable[[ConsolePage], Awaitable[ConsolePage]]:
    """A dependency admitting operators whose role allows `action`."""

    async def check(page: Page) -> ConsolePage:
        page.session.require(action)
        return page

    return check


Viewer = Page
Actor = Annotated[ConsolePage, Depends(allowed("act"))]
Configurer = Annotated[ConsolePage, Depends(allowed("configure"))]
Administrator = Annotated[ConsolePage, Depends(allowed("administer"))]
