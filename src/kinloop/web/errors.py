"""Errors on the web pages: a sign-in prompt for the console, an HTML page for everything else.

The API's problem handlers call `reply` for requests under /console and /portal, so one
translation of domain errors serves both (status codes from `problems.status_of`)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from kinloop.services.keys import Unauthorized
from kinloop.web.templating import render

WEB_PREFIXES = ("/console", "/portal")


class SignInRequired(Unauthorized):
    """The console needs a signed-in operator (no cookie, or its session ended or expired)."""

    code = "sign_in_required"


class PortalLinkRequired(Unauthorized):
    """The portal needs a member link or token (none given, or it expired)."""

    code = "portal_link_required"


def claims(request: Request) -> bool:
    """Whether a request is for a web page (its errors are pages, not problem JSON)."""
    return request.url.path.startswith(WEB_PREFIXES)


def reply(request: Request, status: int, code: str, detail: str) -> Response:
    """The reply to an error on a web page."""
    if code == SignInRequired.code:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.headers.get("hx-request"):
            # htmx follows HX-Redirect with a full page load, not a swap of the sign-in form.
            return HTMLResponse("", status_code=401, headers={"HX-Redirect": "/console/login"})
        return RedirectResponse(f"/console/login?next={quote(target)}", status_code=303)
    template = "portal/error.html" if request.url.path.startswith("/portal") else "console/error.html"
    return render(request, template, status_code=status, status=status, code=code, detail=detail)
