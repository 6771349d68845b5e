"""The tier endpoints: buy a paid tier, set a member's tier by hand, read a member's tier history."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import AwareDatetime, BaseModel, Field

from kinloop.api.deps import (
    Admin,
    Conn,
    Ingest,
    MemberRead,
    ReadConn,
    member_visible,
    program_of,
)
from kinloop.api.schemas import NO_NUL, MemberId, Model, Reason
from kinloop.clock import utcnow
from kinloop.services import tiers as tier_svc

router = APIRouter(prefix="/v1/members/{member_id}", tags=["tiers"])
TierKey = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[a-z][a-z0-9_]*$")]


class PurchaseIn(Model):
    """One term of a paid tier; a repeat with the same key returns the first purchase."""

    tier: TierKey
    idempotency_key: str = Field(min_length=1, max_length=200, pattern=NO_NUL)


class PurchaseOut(BaseModel):
    member_id: str
    tier: str
    starts_at: str
    ends_at: str
    created: bool = Field(description="false when the idempotency key was seen before")


class ManualTierIn(Model):
    """An operator's tier: a floor until `until` (or for good), or `lock`ed; `tier: null` clears it."""

    tier: TierKey | None
    reason: Reason
    until: Annotated[AwareDatetime | None, Field(strict=False)] = None  # an ISO string in JSON
    lock: bool = False


class ManualTierOut(BaseModel):
    member_id: str
    tier: str | None
    changed: bool


class TierRefOut(BaseModel):
    key: str
    name: str


class TierChangeOut(BaseModel):
    from_: TierRefOut | None = Field(alias="from")
    to: TierRefOut | None
    reason: str
    at: str


class TierHistoryOut(BaseModel):
    member_id: str
    changes: list[TierChangeOut]


@router.post("/tier-purchases", response_model=PurchaseOut, status_code=201, summary="Buy a paid tier")
def buy(who: Ingest, conn: Conn, member_id: MemberId, body: PurchaseIn) -> Any:
    """The term extends a running term of the same tier; it ends with a `tier.expiring` reminder before."""
    loaded = program_of(conn, who)
    result = tier_svc.purchase(
        conn, loaded, member_id, body.tier, key=body.idempotency_key, actor=who.name, now=utcnow()
    )
    return result.as_json()


@router.put("/tier", response_model=ManualTierOut, summary="Set a member's tier by hand")
def set_tier(who: Admin, conn: Conn, member_id: MemberId, body: ManualTierIn) -> Any:
    """Admin only; the reason is required and the change is written to the audit log."""
    if body.lock and body.until is not None:
        from kinloop.domain.errors import InvalidInput

        raise InvalidInput("give until or lock, not both", field="lock")
    loaded = program_of(conn, who)
    result = tier_svc.set_manual(
        conn,
        loaded,
        member_id,
        body.tier,
        reason=body.reason,
        actor=who.name,
        until=body.until,
        lock=body.lock,
        now=utcnow(),
    )
    return result.as_json()


@router.get("/tier-history", response_model=TierHistoryOut, summary="A member's tier changes, newest first")
def tier_history(who: MemberRead, conn: ReadConn, member_id: MemberId) -> Any:
    member_visible(who, member_id)
    loaded = program_of(conn, who)
    return {"member_id": member_id, "changes": tier_svc.history(conn, loaded, member_id)}
