"""The /v1 endpoints. Each is a few lines: check who may call, call a service, shape the reply."""

from __future__ import annotations

import contextlib
import difflib
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Request
from pydantic import AwareDatetime
from sqlalchemy import Connection

from kinloop.api import metrics
from kinloop.api.deps import (
    Admin,
    Conn,
    Ingest,
    MemberRead,
    Read,
    ReadConn,
    autocommit_read,
    member_visible,
    program_of,
    recent_program,
    require,
    state,
)
from kinloop.api.lean import LeanRoute
from kinloop.api.schemas import (
    AdjustmentIn,
    BatchResult,
    DiffOut,
    EventBatch,
    EventId,
    EventIn,
    EventResult,
    LedgerPage,
    MemberId,
    MemberOut,
    MovementOut,
    ProfileIn,
    ReversalIn,
    ReversalOut,
    SpendIn,
    TokenIn,
    TokenOut,
    VersionIn,
    VersionOut,
    VersionSource,
)
from kinloop.clock import utcnow
from kinloop.domain.amounts import MAX_MINOR
from kinloop.domain.errors import InvalidAmount
from kinloop.services import explain as explain_svc
from kinloop.services import growth_badges, keys, ledger, member_view, members, programs
from kinloop.services.keys import Principal

router = APIRouter(prefix="/v1")
# The hottest reads, served without FastAPI's per-request machinery (see `LeanRoute`).
lean = APIRouter(prefix="/v1", route_class=LeanRoute)


# --- members --------------------------------------------------------------------------------
_member_reader = require("member_read")


@lean.get("/members/{member_id}", response_model=MemberOut, summary="Balances, tier and progress")
async def get_member(request: Request, member_id: MemberId) -> Any:
    # Admitted here, not by a `MemberRead` parameter: FastAPI's resolving of a dependency was
    # 3.6% of this read (the same check, the same replies; tests/api/test_authorization.py).
    who = await _member_reader(request)
    member_visible(who, member_id)
    return await autocommit_read(request, _member, who, member_id)


def _member(conn: Connection, who: Principal, member_id: str) -> dict[str, Any]:
    now = utcnow()
    recent = recent_program(who)
    if recent is not None:
        # The version seen last is checked in the member's own read: one statement, not two.
        active, loaded = recent
        with contextlib.suppress(member_view.ProgramChanged):
            return member_view.show(conn, loaded, member_id, now=now, active=active).as_json()
    return member_view.show(conn, program_of(conn, who), member_id, now=now).as_json()


# --- events ---------------------------------------------------------------------------------
@router.post(
    "/events",
    response_model=EventResult | BatchResult,
    summary="Ingest one event, or a batch of up to 1,000",
    responses={422: {"description": "a single event that cannot be accepted"}},
)
async def post_events(request: Request, who: Ingest, body: Annotated[EventIn | EventBatch, Body()]) -> Any:
    """Idempotent on `event_id`: a repeat returns the first result and awards nothing.
    In a batch each event succeeds or fails on its own, failures with their index and reason.
    Posts that arrive together are committed together (group commit); each reply comes after
    its events are committed."""
    items = body.events if isinstance(body, EventBatch) else [body]
    batcher = state(request).batcher
    assert batcher is not None  # create_app sets it
    loaded, results = await batcher.ingest(who, [item.model_dump() for item in items])
    metrics.record_ingest(loaded.program, results)
    shaped = [r.as_json(loaded.program) for r in results]
    if isinstance(body, EventBatch):
        counts = {s: sum(1 for r in results if r.status == s) for s in ("accepted", "duplicate", "rejected")}
        return {
            "accepted": counts["accepted"],
            "duplicates": counts["duplicate"],
            "rejected": counts["rejected"],
            "results": shaped,
        }
    only = results[0]
    if only.error is not None:
        raise only.error
    return shaped[0]


@router.get("/events/{event_id}", summary="Why an event earned what it earned")
def get_event(who: MemberRead, conn: ReadConn, event_id: EventId) -> dict[str, Any]:
    loaded = program_of(conn, who)
    x = explain_svc.explain(conn, loaded, event_id)
    member_visible(who, x.member_id)
    return x.as_json()


@router.post("/events/{event_id}/reversal", response_model=ReversalOut, summary="Claw back an event's awards")
def reverse_event(who: Ingest, conn: Conn, event_id: EventId, body: ReversalIn) -> Any:
    """All of it, or with `amount` what a refund of that much of the event's amount takes away."""
    loaded = program_of(conn, who)
    amount = None if body.amount is None else number(body.amount)
    result = ledger.reverse(conn, loaded, event_id, amount=amount, reason=body.reason, actor=who.name, now=utcnow())
    return result.as_json(loaded.program)


def number(value: str | int) -> Decimal:
    """An amount as given, refused with a 422 when it is not a finite number the ledger could
    hold (the arithmetic on a number such as 1e999999999 would overflow)."""
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise InvalidAmount(f"{value!r} is not a number", field="amount") from None
    if not amount.is_finite():
        raise InvalidAmount(f"{value!r} is not a finite number", field="amount")
    if amount.copy_abs() > MAX_MINOR:  # abs() would round, and overflow
        raise InvalidAmount(f"{value} is larger than the ledger accepts ({MAX_MINOR:.0e} units)", field="amount")
    return amount


@router.put("/members/{member_id}", response_model=MemberOut, summary="Create or update a member's profile")
def put_member(who: Ingest, conn: Conn, member_id: MemberId, body: ProfileIn) -> Any:
    loaded = program_of(conn, who)
    profile = members.profile_from(body.model_dump(exclude_none=True))
    now = utcnow()
    members.set_profile(conn, loaded.program_id, member_id, profile, now=now)
    growth_badges.profile_updated(conn, loaded, members.get(conn, loaded.program_id, member_id).pk, profile, now=now)
    return member_view.show(conn, loaded, member_id, now=now).as_json()


@router.get("/members/{member_id}/ledger", response_model=LedgerPage, summary="A member's history, newest first")
def get_ledger(
    who: MemberRead,
    conn: ReadConn,
    member_id: MemberId,
    cursor: Annotated[str | None, Query(max_length=19, pattern=r"^\d+$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Any:
    member_visible(who, member_id)
    loaded = program_of(conn, who)
    before = min(int(cursor), 2**63 - 1) if cursor else None  # no entry id is larger
    rows, next_cursor = members.history(conn, loaded, member_id, before=before, limit=limit)
    return {"entries": rows, "next_cursor": next_cursor}


@router.post("/members/{member_id}/adjustments", response_model=MovementOut, summary="Manual credit or debit")
def adjust(who: Admin, conn: Conn, member_id: MemberId, body: AdjustmentIn) -> Any:
    """Admin only; the reason is required and the change is written to the audit log."""
    loaded = program_of(conn, who)
    result = ledger.adjust(
        conn,
        loaded,
        member_id,
        body.currency,
        number(body.amount),
        reason=body.reason,
        actor=who.name,
        key=body.idempotency_key,
        now=utcnow(),
    )
    return result.as_json(loaded.program)


@router.post("/members/{member_id}/spends", response_model=MovementOut, summary="Spend points")
def spend(who: Ingest, conn: Conn, member_id: MemberId, body: SpendIn) -> Any:
    """Debit available points, soonest-expiring first; idempotent on `idempotency_key`."""
    loaded = program_of(conn, who)
    result = ledger.spend(
        conn,
        loaded,
        member_id,
        body.currency,
        number(body.amount),
        reason=body.reason,
        key=body.idempotency_key,
        now=utcnow(),
        actor=who.name,
    )
    return result.as_json(loaded.program)


@router.post("/members/{member_id}/tokens", response_model=TokenOut, summary="Mint a member token")
def mint(who: Ingest, conn: Conn, member_id: MemberId, body: TokenIn | None = None) -> Any:
    """A short-lived token with which the member's own app may read that member and nothing else."""
    loaded = program_of(conn, who)
    members.get(conn, loaded.program_id, member_id)
    st = state_of(conn)
    token, expires = keys.mint_token(
        st, loaded.program_id, member_id, now=utcnow(), ttl=timedelta(seconds=body.ttl_seconds if body else 900)
    )
    return {"token": token, "member_id": member_id, "expires_at": expires.isoformat()}


def state_of(conn: Connection) -> bytes:
    return keys.token_secret(conn, utcnow())


# --- program versions -----------------------------------------------------------------------
@router.get("/program/versions", response_model=list[VersionOut], summary="Versions of the key's program")
def list_versions(who: Read, conn: ReadConn) -> Any:
    return [v.as_json(source=False) for v in programs.versions(conn, who.program_id)]


@router.get("/program/versions/{version}", response_model=VersionSource, summary="One version, with its file")
def show_version(who: Read, conn: ReadConn, version: int) -> Any:
    return programs.version(conn, who.program_id, version).as_json()


@router.get("/program/versions/{a}/diff/{b}", response_model=DiffOut, summary="What changed between two versions")
def diff_versions(who: Read, conn: ReadConn, a: int, b: int) -> Any:
    old, new = programs.version(conn, who.program_id, a), programs.version(conn, who.program_id, b)
    lines = difflib.unified_diff(
        old.source.splitlines(keepends=True),
        new.source.splitlines(keepends=True),
        fromfile=f"version {a}",
        tofile=f"version {b}",
    )
    loaded = program_of(conn, who)
    return {"program": loaded.program.key, "from_version": a, "to_version": b, "diff": "".join(lines)}


@router.post("/program/versions", response_model=VersionSource, status_code=201, summary="Upload a new version")
def upload_version(who: Admin, conn: Conn, body: VersionIn) -> Any:
    """Validated first: a broken file is refused with every problem at its path."""
    result = programs.upload(
        conn,
        program_of(conn, who),
        body.source,
        now=utcnow(),
        actor=who.name,
        activate=body.activate,
        keep_until=body.keep_tiers_until,
    )
    return programs.version(conn, who.program_id, result.loaded.version).as_json()


@router.post("/program/versions/{version}/activate", response_model=VersionOut, summary="Make a version active")
def activate_version(
    who: Admin,
    conn: Conn,
    version: int,
    keep_tiers_until: Annotated[
        AwareDatetime | None, Query(description="when the ladder changes: members keep their tier until then")
    ] = None,
) -> Any:
    programs.activate(conn, who.program_id, version, now=utcnow(), actor=who.name, keep_until=keep_tiers_until)
    return programs.version(conn, who.program_id, version).as_json(source=False)
