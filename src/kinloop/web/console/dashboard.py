"""Console area: the dashboard (being built)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from kinloop.web.console.session import Page
from kinloop.web.templating import render

router = APIRouter()


@router.get("/dashboard")
def dashboard(request: Request, page: Page) -> HTMLResponse:
    return render(request, "console/dashboard.html", page=page)
