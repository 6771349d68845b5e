"""The /v1/envelopes endpoints: members send and claim red envelopes on their own behalf
(ingest key or member token); admins send compensation in the program's name."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse
from pydantic import Field

from kinloop.api.deps import (
    Admin,
    Conn,
    MemberAct,
    MemberRead,
    Read,
    ReadConn,
    member_visible,
    program_of,
)
from kinloop.api.problems import problem
from kinloop.api.routes import number
from kinloop.api.schemas import NO_NUL, Id, Model, Reason
from kinloop.clock import utcnow
from kinloop.domain.errors import NotFound
from kinloop.services import envelopes

router = APIRouter()
# A member's envelope key has no colon: keys with one are the program's own (birthday:..., ...).
MEMBER_KEY = r"^[A-Za-z0-9_.\-]+$"
EnvelopeKey = Annotated[str, Field(min_length=1, max_length=120, pattern=MEMBER_KEY)]
EnvelopePath = Annotated[str, Path(min_length=1, max_length=200, pattern=NO_NUL)]


class EnvelopeIn(Model):
    """`to` one member (credited at once), or `shares` for a group envelope that members claim."""

    from_member: Id = Field(alias="from")
    key: EnvelopeKey = Field(description="idempotency key and the envelope's id (share it to let others claim)")
    amount: str | int
    to: Id | None = None
    shares: Annotated[int, Field(ge=1, le=10000)] | None = None
    split: Literal["equal", "random"] = "equal"
    window_hours: Annotated[int, Field(ge=1, le=720)] = 24
    currency: str | None = Field(None, max_length=64)
    message: str | None = Field(None, max_length=200, pattern=NO_NUL)


class ClaimIn(Model):
    member_id: Id


class CompensationIn(Model):
    member_id: Id
    amount: str | int
    reason: Reason
    key: EnvelopeKey
    currency: str | None = Field(None, max_length=64)


@router.post("/v1/envelopes", status_code=201, summary="Send a red envelope")
def send(who: MemberAct, conn: Conn, body: EnvelopeIn) -> Any:
    """Daily limits, fee and currency follow the program's `envelopes` section; no self-transfer."""
    member_visible(who, body.from_member)
    loaded = program_of(conn, who)
    return envelopes.send(
        conn,
        loaded,
        body.from_member,
        key=body.key,
        amount=number(body.amount),
        to=body.to,
        shares=body.shares,
        mode=body.split,
        window=timedelta(hours=body.window_hours),
        currency_key=body.currency,
        message=body.message,
        now=utcnow(),
        actor=who.name,
    )


@router.get("/v1/envelopes/{envelope_key}", summary="One envelope and its claims")
def get_envelope(who: MemberRead, conn: ReadConn, envelope_key: EnvelopePath) -> Any:
    """A member token sees group envelopes (shared to be claimed) and the ones it sent, received or claimed."""
    view = envelopes.view(conn, program_of(conn, who), envelope_key, now=utcnow())
    if who.scope == "member" and view["kind"] != "group":
        involved = {view["from"], view["to"], *(c["member_id"] for c in view["claims"])}
        if who.member_id not in involved:
            raise NotFound(f"no envelope {envelope_key!r} in this program", field="envelope")
    return view


@router.post("/v1/envelopes/{envelope_key}/claims", summary="Claim a share of a group envelope")
def claim(who: MemberAct, conn: Conn, envelope_key: EnvelopePath, body: ClaimIn) -> Any:
    """One claim per member (a repeat returns it); after the window the envelope closes and
    its rest goes back to the sender (that change is kept; the claim gets a 409)."""
    member_visible(who, body.member_id)
    loaded = program_of(conn, who)
    try:
        return envelopes.claim(conn, loaded, envelope_key, body.member_id, now=utcnow()).as_json(loaded.program)
    except envelopes.ClosedOnClaim as exc:
        response: JSONResponse = problem(409, exc.code, exc.detail, field="envelope")
        return response


@router.post("/v1/envelopes/compensations", status_code=201, summary="Send a compensation envelope (admin)")
def compensate(who: Admin, conn: Conn, body: CompensationIn) -> Any:
    """In the program's name, with a reason; audited; once per key."""
    loaded = program_of(conn, who)
    return envelopes.compensate(
        conn,
        loaded,
        body.member_id,
        amount=number(body.amount),
        reason=body.reason,
        key=body.key,
        actor=who.name,
        now=utcnow(),
        currency_key=body.currency,
    )


@router.get("/v1/program/envelopes", summary="Envelope figures: volumes and claim rates per kind")
def envelope_stats(who: Read, conn: ReadConn) -> Any:
    return envelopes.stats(conn, program_of(conn, who))
