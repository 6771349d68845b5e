"""Console area: the program — its versions, uploading a new one (problems shown at their
path and line), the diff against the active version, activation and roll back."""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import Engine

from kinloop.api.deps import run, state
from kinloop.clock import utcnow
from kinloop.domain.errors import NotFound, ProgramInvalid
from kinloop.program import review
from kinloop.program.loader import parse_program
from kinloop.services import programs
from kinloop.web.console.session import Configurer, ConsolePage, Page
from kinloop.web.templating import render

router = APIRouter()

# A program file is a few kilobytes; this leaves room for a large one and no more.
MAX_SOURCE = 1_000_000


def _versions(conn: Any, program_key: str | None) -> tuple[programs.LoadedProgram, list[programs.Version]]:
    loaded = programs.active(conn, program_key)
    return loaded, programs.versions(conn, loaded.program_id)


def _compare(old: programs.Version, new: programs.Version) -> dict[str, Any]:
    """What changes from version `old` to version `new`: the summary and the unified diff."""
    try:
        changes = [str(c) for c in review.summary(parse_program(old.source), parse_program(new.source))]
    except ProgramInvalid:  # a stored version always parses; an older format might not
        changes = []
    lines = review.unified(old.source, new.source, old_name=f"version {old.version}", new_name=f"version {new.version}")
    return {"changes": changes, "diff": lines, "old": old, "new": new}


def _overview(engine: Engine, program_key: str | None) -> dict[str, Any]:
    with engine.connect() as conn:
        loaded, versions = _versions(conn, program_key)
        active = next(v for v in versions if v.active)
        activated = programs.activated_at(conn, loaded.program_id, active.version)
    earlier = [v for v in versions if v.version < active.version]
    return {
        "program": loaded.program,
        "active": active,
        "activated_at": activated or active.created_at,
        "versions": list(reversed(versions)),
        "previous": earlier[-1] if earlier else None,
    }


def _flash(activated: int | None, moved: int | None, uploaded: int | None) -> str | None:
    if activated is not None:
        text = f"Version {activated} is now active."
        if moved is not None:
            text += f" Tiers re-evaluated: {moved:,} members changed tier."
        return text
    if uploaded is not None:
        return f"Version {uploaded} is stored and valid; review what changes, then activate it."
    return None


async def _overview_page(
    request: Request,
    page: ConsolePage,
    *,
    status_code: int = 200,
    flash: str | None = None,
    **context: Any,
) -> HTMLResponse:
    data = await run(request, _overview, state(request).reader, page.program_key)
    return render(request, "console/program.html", status_code=status_code, page=page, flash=flash, **data, **context)


@router.get("/program")
async def overview(
    request: Request,
    page: Page,
    activated: Annotated[int | None, Query(ge=1, lt=2**31)] = None,
    moved: Annotated[int | None, Query(ge=0, lt=2**31)] = None,
) -> HTMLResponse:
    """The active version and its file, every version, the upload form and roll back."""
    return await _overview_page(request, page, flash=_flash(activated, moved, None), source="")


def _upload(engine: Engine, program_key: str | None, source: str, actor: str, now: datetime) -> tuple[int, bool]:
    with engine.begin() as conn:  # a refused file writes nothing
        loaded = programs.active(conn, program_key)
        result = programs.upload(conn, loaded, source, now=now, actor=actor, activate=False)
        return result.loaded.version, result.new_version


async def _read(file: UploadFile | None) -> tuple[str | None, str | None]:
    """The text of an uploaded file (None when no file was chosen), or why it cannot be read."""
    if file is None or not file.filename:
        return None, None
    data = await file.read(MAX_SOURCE + 1)
    if len(data) > MAX_SOURCE:
        return None, f"the file is larger than {MAX_SOURCE:,} bytes"
    try:
        return data.decode("utf-8"), None
    except UnicodeDecodeError:
        return None, "the file is not UTF-8 text"


# Lines shown before and after each line with a problem.
CONTEXT_LINES = 2


def _around(text: str, at: dict[int, list[str]]) -> list[tuple[int | None, str, list[str]]]:
    """The lines of `text` near a problem, each with its problems; None numbers mark a gap."""
    lines = text.splitlines()
    near = sorted({n for line in at for n in range(line - CONTEXT_LINES, line + CONTEXT_LINES + 1)})
    out: list[tuple[int | None, str, list[str]]] = []
    last = 0
    for n in near:
        if not 1 <= n <= len(lines):
            continue
        if n > last + 1:
            out.append((None, "…", []))
        out.append((n, lines[n - 1], at.get(n, [])))
        last = n
    if out and last < len(lines):
        out.append((None, "…", []))
    return out


@router.post("/program/versions")
async def upload(
    request: Request,
    page: Configurer,
    source: Annotated[str, Form(max_length=MAX_SOURCE)] = "",
    file: UploadFile | None = None,
) -> Response:
    """Check a new version as `kinloop validate` does; store it (not active yet) and show what
    it changes, or show every problem at its path and line."""
    text, unreadable = await _read(file)
    if unreadable:
        return await _overview_page(request, page, status_code=422, source=source, file_error=unreadable)
    if text is None:
        text = source
    if not text.strip():
        return await _overview_page(
            request, page, status_code=422, source=source, source_error="paste the program's YAML or choose a file"
        )
    text = text.replace("\r\n", "\n")  # a browser's textarea sends CRLF; the file keeps its own lines
    st = state(request)
    try:
        async with st.writer or contextlib.nullcontext():
            number, new = await run(
                request, _upload, st.engine, page.program_key, text, f"console:{page.operator.username}", utcnow()
            )
    except ProgramInvalid as exc:
        issues = review.locate(text, exc.issues)
        at: dict[int, list[str]] = {}
        for issue in issues:
            if issue.line is not None:
                at.setdefault(issue.line, []).append(str(issue))
        listing = _around(text, at)
        return await _overview_page(request, page, status_code=422, source=text, issues=issues, listing=listing)
    suffix = "?uploaded=1" if new else "?unchanged=1"
    return RedirectResponse(f"/console/program/versions/{number}{suffix}", status_code=303)


def _version(engine: Engine, program_key: str | None, number: int) -> dict[str, Any]:
    with engine.connect() as conn:
        loaded, versions = _versions(conn, program_key)
        shown = programs.version(conn, loaded.program_id, number)
    active = next(v for v in versions if v.active)
    return {"program": loaded.program, "shown": shown, "active": active, **_compare(active, shown)}


@router.get("/program/versions/{number}")
async def version(
    request: Request,
    page: Page,
    number: int,
    uploaded: Annotated[int | None, Query()] = None,
    unchanged: Annotated[int | None, Query()] = None,
) -> HTMLResponse:
    """One version: its file, and what activating it would change against the active one."""
    data = await run(request, _version, state(request).reader, page.program_key, number)
    flash = None
    if uploaded:
        flash = _flash(None, None, number)
    elif unchanged:
        flash = f"That file is version {number} already; nothing new was stored."
    return render(request, "console/program_version.html", page=page, flash=flash, **data)


def _rollback(engine: Engine, program_key: str | None) -> dict[str, Any]:
    with engine.connect() as conn:
        loaded, versions = _versions(conn, program_key)
    active = next(v for v in versions if v.active)
    earlier = [v for v in versions if v.version < active.version]
    if not earlier:
        raise NotFound(f"version {active.version} is the first version: there is nothing to roll back to")
    return {"program": loaded.program, "active": active, **_compare(active, earlier[-1])}


@router.get("/program/rollback")
async def rollback(request: Request, page: Configurer) -> HTMLResponse:
    """Confirm a roll back: what returning to the version before the active one changes."""
    data = await run(request, _rollback, state(request).reader, page.program_key)
    return render(request, "console/program_rollback.html", page=page, **data)


def _activate(
    engine: Engine, program_key: str | None, number: int, rollback: bool, reason: str, actor: str, now: datetime
) -> int | None:
    with engine.begin() as conn:
        loaded = programs.active(conn, program_key)
        moved = programs.activate(
            conn,
            loaded.program_id,
            number,
            now=now,
            actor=actor,
            reason=reason or None,
            action="program.rollback" if rollback else "program.activate",
        )
        return moved.changed if moved is not None else None


@router.post("/program/versions/{number}/activate")
async def activate(
    request: Request,
    page: Configurer,
    number: int,
    rollback: Annotated[bool, Form()] = False,
    reason: Annotated[str, Form(max_length=1000)] = "",
) -> Response:
    """Make a version active (the API's path: tiers are re-evaluated when the ladder changed)."""
    st = state(request)
    async with st.writer or contextlib.nullcontext():
        moved = await run(
            request, _activate, st.engine, page.program_key, number, rollback, reason.strip(),
            f"console:{page.operator.username}", utcnow(),
        )  # fmt: skip
    target = f"/console/program?activated={number}" + (f"&moved={moved}" if moved is not None else "")
    return RedirectResponse(target, status_code=303)
