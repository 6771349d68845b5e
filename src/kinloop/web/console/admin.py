"""Console area: who gets in and what happened — webhooks and their delivery log, API keys,
operator accounts (owners only: the `administer` role), and the audit log (everyone).

Secrets (a webhook's signing secret, a new API key) are shown once, in the reply to the
change that made them, and never again. Every change is audited as `console:<username>`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import Connection

from kinloop.clock import utcnow
from kinloop.domain.errors import InvalidInput
from kinloop.domain.operators import ROLES
from kinloop.services import audit, keys, operators, webhooks
from kinloop.services.keys import SCOPES
from kinloop.services.outbox import KINDS
from kinloop.services.webhooks import STATUSES
from kinloop.web.console.outlets import NO_NUL, Id, Key, actor_of, errors_of, loaded_of, read, see, write
from kinloop.web.console.session import Administrator, ConsolePage, Page
from kinloop.web.templating import render

router = APIRouter()
LOG_PAGE = 50
AUDIT_PAGE = 50


def _program_id(conn: Connection, page: ConsolePage) -> int:
    return loaded_of(conn, page).program_id


# --- webhooks -------------------------------------------------------------------------------
def _webhooks(conn: Connection, page: ConsolePage) -> dict[str, Any]:
    pid = _program_id(conn, page)
    return {"subscriptions": webhooks.listing(conn, pid), "counts": webhooks.delivery_counts(conn, pid)}


async def _webhooks_page(
    request: Request,
    page: ConsolePage,
    *,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
    form: dict[str, Any] | None = None,
    created: webhooks.Subscription | None = None,
    secret: str | None = None,
    flash: str | None = None,
) -> HTMLResponse:
    data = await read(request, _webhooks, page)
    return render(
        request,
        "console/webhooks.html",
        status_code=status_code,
        page=page,
        kinds=KINDS,
        errors=errors or {},
        form=form or {"kinds": []},
        created=created,
        secret=secret,
        flash=flash,
        **data,
    )


@router.get("/webhooks")
async def webhooks_page(request: Request, page: Administrator, done: str | None = None) -> HTMLResponse:
    flash = "The webhook is disabled: it gets no new messages." if done == "disabled" else None
    return await _webhooks_page(request, page, flash=flash)


def _create_webhook(
    conn: Connection, page: ConsolePage, url: str, kinds: list[str], description: str | None, now: datetime
) -> tuple[webhooks.Subscription, str]:
    pid = _program_id(conn, page)
    sub, secret = webhooks.create(conn, pid, url=url, kinds=kinds, description=description, now=now)
    audit.record(
        conn,
        pid,
        actor=actor_of(page),
        action="webhook.create",
        target=str(sub.id),
        details={"url": sub.url, "kinds": sub.kinds},  # never the secret
        now=now,
    )
    return sub, secret


@router.post("/webhooks")
async def create_webhook(
    request: Request,
    page: Administrator,
    url: Annotated[str, Form(max_length=2000, pattern=NO_NUL)] = "",
    kinds: Annotated[list[str], Form()] = [],  # noqa: B006 (FastAPI copies defaults)
    description: Annotated[str, Form(max_length=200, pattern=NO_NUL)] = "",
) -> HTMLResponse:
    form = {"url": url, "kinds": kinds, "description": description}
    try:
        sub, secret = await write(request, _create_webhook, page, url, kinds, description.strip() or None, utcnow())
    except InvalidInput as exc:
        field = (exc.field or "form").split("[")[0]
        return await _webhooks_page(request, page, status_code=422, errors={field: exc.detail}, form=form)
    return await _webhooks_page(request, page, created=sub, secret=secret)


def _disable_webhook(conn: Connection, page: ConsolePage, sub_id: int, now: datetime) -> None:
    pid = _program_id(conn, page)
    found = webhooks.get(conn, pid, sub_id)
    if not found.active:
        return
    webhooks.deactivate(conn, pid, sub_id, now=now)
    audit.record(
        conn,
        pid,
        actor=actor_of(page),
        action="webhook.disable",
        target=str(sub_id),
        details={"url": found.url},
        now=now,
    )


@router.post("/webhooks/{sub_id}/disable")
async def disable_webhook(request: Request, page: Administrator, sub_id: Id) -> Response:
    await write(request, _disable_webhook, page, sub_id, utcnow())
    return see(request, "/console/webhooks?done=disabled")


def _log(conn: Connection, page: ConsolePage, sub_id: int, status: str | None, before: int | None) -> dict[str, Any]:
    pid = _program_id(conn, page)
    rows, cursor = webhooks.delivery_log(conn, pid, sub_id, before=before, limit=LOG_PAGE, status=status)
    return {"subscription": webhooks.get(conn, pid, sub_id), "deliveries": rows, "next_cursor": cursor}


@router.get("/webhooks/{sub_id}")
async def webhook_log(
    request: Request,
    page: Administrator,
    sub_id: Id,
    status: Annotated[str, Query(max_length=20, pattern=NO_NUL)] = "",
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> HTMLResponse:
    if status and status not in STATUSES:
        raise InvalidInput(f"unknown status {status!r} (one of {', '.join(STATUSES)})", field="status")
    data = await read(request, _log, page, sub_id, status or None, before)
    return render(
        request,
        "console/webhooks_log.html",
        page=page,
        statuses=STATUSES,
        chosen=status,
        first_page=before is None,
        **data,
    )


# --- API keys -------------------------------------------------------------------------------
def _keys(conn: Connection, page: ConsolePage) -> list[keys.KeyInfo]:
    return keys.listing(conn, _program_id(conn, page))


async def _keys_page(
    request: Request,
    page: ConsolePage,
    *,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
    form: dict[str, Any] | None = None,
    created: keys.KeyInfo | None = None,
    secret: str | None = None,
    flash: str | None = None,
) -> HTMLResponse:
    found = await read(request, _keys, page)
    return render(
        request,
        "console/keys.html",
        status_code=status_code,
        page=page,
        keys=found,
        scopes=SCOPES,
        errors=errors or {},
        form=form or {},
        created=created,
        secret=secret,
        flash=flash,
    )


@router.get("/keys")
async def keys_page(request: Request, page: Administrator, done: str | None = None) -> HTMLResponse:
    flash = "The key is revoked: it no longer opens the API." if done == "revoked" else None
    return await _keys_page(request, page, flash=flash)


def _create_key(conn: Connection, page: ConsolePage, scope: str, name: str, now: datetime) -> tuple[str, keys.KeyInfo]:
    pid = _program_id(conn, page)
    secret, info = keys.create(conn, pid, scope, name=name, now=now)
    audit.record(
        conn,
        pid,
        actor=actor_of(page),
        action="key.create",
        target=info.prefix,
        details={"scope": info.scope, "name": info.name},  # never the key itself
        now=now,
    )
    return secret, info


@router.post("/keys")
async def create_key(
    request: Request,
    page: Administrator,
    name: Annotated[str, Form(max_length=200, pattern=NO_NUL)] = "",
    scope: Annotated[str, Form(max_length=20, pattern=NO_NUL)] = "",
) -> HTMLResponse:
    form = {"name": name, "scope": scope}
    try:
        secret, info = await write(request, _create_key, page, scope, name.strip(), utcnow())
    except InvalidInput as exc:
        return await _keys_page(request, page, status_code=422, errors=errors_of(exc), form=form)
    return await _keys_page(request, page, created=info, secret=secret)


def _revoke_key(conn: Connection, page: ConsolePage, prefix: str, now: datetime) -> None:
    pid = _program_id(conn, page)
    before = next((k for k in keys.listing(conn, pid) if k.prefix == prefix), None)
    info = keys.revoke(conn, pid, prefix, now=now)  # NotFound for another program's key
    if before is not None and before.revoked_at is None:
        audit.record(
            conn, pid, actor=actor_of(page), action="key.revoke", target=prefix, details={"name": info.name}, now=now
        )


@router.post("/keys/{prefix}/revoke")
async def revoke_key(request: Request, page: Administrator, prefix: Key) -> Response:
    await write(request, _revoke_key, page, prefix, utcnow())
    return see(request, "/console/keys?done=revoked")


# --- operators ------------------------------------------------------------------------------
async def _operators_page(
    request: Request,
    page: ConsolePage,
    *,
    status_code: int = 200,
    errors: dict[str, str] | None = None,
    form: dict[str, Any] | None = None,
    flash: str | None = None,
) -> HTMLResponse:
    found = await read(request, operators.listing)
    return render(
        request,
        "console/operators.html",
        status_code=status_code,
        page=page,
        operators=found,
        roles=ROLES,
        errors=errors or {},
        form=form or {},
        flash=flash,
    )


DONE = {"created": "The operator can sign in now.", "disabled": "The operator is disabled and signed out."}


@router.get("/operators")
async def operators_page(request: Request, page: Administrator, done: str | None = None) -> HTMLResponse:
    return await _operators_page(request, page, flash=DONE.get(done or ""))


def _create_operator(
    conn: Connection, page: ConsolePage, username: str, role: str, password: str, now: datetime
) -> operators.Operator:
    op = operators.create(conn, username, role, password, now=now)
    audit.record(
        conn,
        None,
        actor=actor_of(page),
        action="operator.create",
        target=op.username,
        details={"role": op.role},
        now=now,
    )
    return op


@router.post("/operators")
async def create_operator(
    request: Request,
    page: Administrator,
    username: Annotated[str, Form(max_length=200, pattern=NO_NUL)] = "",
    role: Annotated[str, Form(max_length=20, pattern=NO_NUL)] = "",
    password: Annotated[str, Form(max_length=400, pattern=NO_NUL)] = "",
) -> Response:
    form = {"username": username, "role": role}  # never the password back
    try:
        await write(request, _create_operator, page, username, role, password, utcnow())
    except InvalidInput as exc:
        return await _operators_page(request, page, status_code=422, errors=errors_of(exc), form=form)
    return see(request, "/console/operators?done=created")


class DisableSelf(InvalidInput):
    """An owner may not disable their own account (they would lock themselves out)."""

    code = "disable_self"


def _disable_operator(conn: Connection, page: ConsolePage, username: str, now: datetime) -> None:
    if username == page.operator.username:
        raise DisableSelf("you cannot disable your own account; ask another owner", field="disable")
    found = operators.get(conn, username)
    if found.disabled_at is not None:
        return
    operators.disable(conn, username, now=now)
    audit.record(
        conn,
        None,
        actor=actor_of(page),
        action="operator.disable",
        target=username,
        details={"role": found.role},
        now=now,
    )


@router.post("/operators/{username}/disable")
async def disable_operator(request: Request, page: Administrator, username: Key) -> Response:
    try:
        await write(request, _disable_operator, page, username, utcnow())
    except DisableSelf as exc:
        return await _operators_page(request, page, status_code=422, errors=errors_of(exc))
    return see(request, "/console/operators?done=disabled")


# --- the audit log --------------------------------------------------------------------------
def _audit(
    conn: Connection, page: ConsolePage, actor: str, action: str, target: str, before: int | None
) -> dict[str, Any]:
    pid = _program_id(conn, page)
    entries, cursor = audit.listing(
        conn, pid, actor=actor or None, action=action or None, target=target or None, before=before, limit=AUDIT_PAGE
    )
    return {"entries": entries, "next_cursor": cursor, "actions": audit.actions(conn, pid)}


@router.get("/audit")
async def audit_page(
    request: Request,
    page: Page,
    actor: Annotated[str, Query(max_length=200, pattern=NO_NUL)] = "",
    action: Annotated[str, Query(max_length=64, pattern=NO_NUL)] = "",
    target: Annotated[str, Query(max_length=200, pattern=NO_NUL)] = "",
    before: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
) -> HTMLResponse:
    data = await read(request, _audit, page, actor.strip(), action.strip(), target.strip(), before)
    return render(
        request,
        "console/audit.html",
        page=page,
        filters={"actor": actor, "action": action, "target": target},
        first_page=before is None,
        **data,
    )
