"""The web pages: the operator console (`/console`) and the member portal (`/portal`).

Server-rendered (Jinja2 + htmx) over the same services as the HTTP API; every asset is
served by kinloop itself (`/static/web`), so both work with no internet.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    """Mount the console, the portal and their assets on the application."""
    from kinloop.web import console, portal

    app.mount("/static/web", StaticFiles(directory=STATIC), name="web-static")
    app.include_router(console.router)
    app.include_router(portal.router)
