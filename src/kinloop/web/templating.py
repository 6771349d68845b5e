"""The Jinja2 environment of the web pages, and the filters that speak the program's words."""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from kinloop import __version__

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
env = templates.env
env.globals["version"] = __version__


def number(value: int | Decimal | str | None) -> str:
    """A number with thousands separators (exact: Decimals are not turned into floats)."""
    if value is None or value == "":
        return "–"
    d = Decimal(str(value))
    if d == d.to_integral_value():
        return f"{int(d):,}"
    return f"{d:,}"


def when(value: datetime | date | str | None) -> str:
    """A timestamp as operators read it: `2026-12-01 14:05 UTC`."""
    if value is None or value == "":
        return "–"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return str(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M UTC") if value.tzinfo else value.strftime("%Y-%m-%d %H:%M")
    return value.isoformat()


env.filters["number"] = number
env.filters["when"] = when


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """Render a template for a request (the request is in the context for url_for)."""
    return templates.TemplateResponse(request, name, context, status_code=status_code)
