"""What every console handler shares: its transactions, the program it works on, how the
audit log names the operator, and the replies after a change."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import Path, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import Connection, Engine

from kinloop.api.deps import run, state
from kinloop.domain.errors import KinloopError
from kinloop.services import programs
from kinloop.services.programs import LoadedProgram
from kinloop.web.console.session import ConsolePage

T = TypeVar("T")
NO_NUL = r"^[^\x00]*$"  # PostgreSQL cannot store (or compare) text with NUL characters
Key = Annotated[str, Path(min_length=1, max_length=200, pattern=NO_NUL)]
Id = Annotated[int, Path(ge=1, le=2**63 - 1)]


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
