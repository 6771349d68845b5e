"""Who is using the portal: a member token, from the portal's cookie or a bearer header.

`GET /portal/enter?token=...` puts a member token (`klm_...`, see `services.keys`) in an
HttpOnly cookie; every other page reads it from there, or from `Authorization: Bearer klm_...`
when a brand's app shows the portal in a webview. A change (any method but GET and HEAD) must
also carry the token's CSRF value (an HMAC of the token with the signing secret), as the form
field `csrf` or the header `X-CSRF-Token`: a page of another site can make the browser send
the cookie, but cannot read the value.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine

from kinloop.api.deps import run, state
from kinloop.clock import utcnow
from kinloop.services import keys
from kinloop.services.keys import Forbidden, Principal, Unauthorized
from kinloop.web.errors import PortalLinkRequired

COOKIE = "kinloop_portal"
SAFE_METHODS = ("GET", "HEAD")
TOKEN_PREFIX = "klm_"


class PortalCsrfRefused(Forbidden):
    """A change without the token's CSRF value: it did not come from a portal page."""

    code = "csrf_refused"


@dataclass(frozen=True, slots=True)
class PortalMember:
    """The member a portal request speaks for, and the CSRF value its pages carry."""

    principal: Principal
    csrf: str

    @property
    def member_id(self) -> str:
        assert self.principal.member_id is not None  # member tokens always name their member
        return self.principal.member_id

    @property
    def program_id(self) -> int:
        return self.principal.program_id


def csrf_for(secret: bytes, token: str) -> str:
    """The CSRF value of a member token (the same for every page opened with it)."""
    return hmac.new(secret, b"portal-csrf\x00" + token.encode(), hashlib.sha256).hexdigest()


def _load_secret(engine: Engine) -> bytes:
    with engine.begin() as conn:
        return keys.token_secret(conn, utcnow())


async def secret(request: Request) -> bytes:
    """The member-token signing secret (read once per process, as the API does)."""
    st = state(request)
    if st.token_secret is None:
        st.token_secret = await run(request, _load_secret, st.engine)
    return st.token_secret


def check_token(secret_: bytes, token: str) -> Principal:
    """The member behind a token, or PortalLinkRequired saying why not in a member's words."""
    if not token.startswith(TOKEN_PREFIX):
        raise PortalLinkRequired("this is not a member link; open the portal from your link or the app")
    try:
        return keys.read_token(secret_, token, now=utcnow())
    except Unauthorized as exc:
        if "expired" in exc.detail:
            raise PortalLinkRequired("your link has expired; open the portal again from the app") from None
        raise PortalLinkRequired("this link is not valid; open the portal again from the app") from None


def _bearer(request: Request) -> str | None:
    scheme, _, credential = request.headers.get("authorization", "").partition(" ")
    return (credential.strip() or None) if scheme.lower() == "bearer" else None


def _form_token(request: Request) -> str | None:
    # Starlette keeps the parsed form on the request, so the endpoint's Form() reads it again.
    form = getattr(request, "_form", None)
    value = form.get("csrf") if form is not None else None
    return value if isinstance(value, str) else None


async def current_member(request: Request) -> PortalMember:
    """The member of this request, or PortalLinkRequired (401); CsrfRefused (403) for a change
    without the token's CSRF value."""
    token = _bearer(request) or request.cookies.get(COOKIE)
    if not token:
        raise PortalLinkRequired("open your membership from your link or from the app")
    key = await secret(request)
    who = check_token(key, token)
    csrf = csrf_for(key, token)
    if request.method not in SAFE_METHODS:
        sent = request.headers.get("x-csrf-token")
        if sent is None and request.headers.get("content-type", "").startswith(
            ("application/x-www-form-urlencoded", "multipart/form-data")
        ):
            await request.form()
            sent = _form_token(request)
        if not sent or not hmac.compare_digest(sent, csrf):
            raise PortalCsrfRefused("this change did not come from your membership page; reload it and try again")
    return PortalMember(who, csrf)


Member = Annotated[PortalMember, Depends(current_member)]
