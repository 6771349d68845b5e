"""The points mall over HTTP: /v1/rewards, /v1/orders, /v1/holds, points expiring soon and
redemption figures. Each endpoint checks who may call, calls a service, shapes the reply."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from kinloop.api.deps import (
    Admin,
    Conn,
    Ingest,
    MemberRead,
    Read,
    ReadConn,
    member_visible,
    program_of,
)
from kinloop.api.problems import problem
from kinloop.api.routes import number
from kinloop.api.schemas import NO_NUL, Expiring, IdempotencyKey, MemberId, Model
from kinloop.clock import utcnow
from kinloop.domain.errors import HoldExpired, InvalidInput, NotFound
from kinloop.domain.orders import Action
from kinloop.domain.program import Period
from kinloop.domain.rewards import MAX_QUANTITY, RewardKind
from kinloop.services import holds, mall, member_view, members, orders
from kinloop.services.keys import Principal

router = APIRouter(prefix="/v1")
RewardKey = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
OrderId = Annotated[int, Path(ge=1, le=2**63 - 1)]
HoldId = Annotated[int, Path(ge=1, le=2**63 - 1)]
Text = Annotated[str, Field(max_length=200, pattern=NO_NUL)]
Amount = Annotated[str | int, Field(examples=[120, "120"])]


# --- bodies ---------------------------------------------------------------------------------
class LimitIn(Model):
    count: int = Field(ge=1, le=1_000_000)
    period: Period


class PromoIn(Model):
    starts_at: str = Field(max_length=40, examples=["2026-03-01T00:00:00+01:00"])
    ends_at: str = Field(max_length=40)
    price: Amount


class RewardIn(Model):
    """A reward of the mall; prices are in the currency's units (points), cash is a decimal string."""

    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    currency: str = Field(min_length=1, max_length=64)
    price: Amount
    kind: RewardKind = "physical"
    supplier: Text | None = Field(None, description="external supplier; leave out for the program's own")
    cash: str | None = Field(None, max_length=40, pattern=r"^\d+(\.\d+)?$", description="points + cash")
    cash_currency: str | None = Field(None, min_length=3, max_length=3)
    stock: int | None = Field(None, ge=0, le=10**15, description="leave out for unlimited")
    limit: LimitIn | None = None
    tiers: list[Annotated[str, Field(max_length=64)]] = Field(default_factory=list, max_length=50)
    promos: list[PromoIn] = Field(default_factory=list, max_length=50)
    category: str | None = Field(None, max_length=100, pattern=NO_NUL)
    image_url: str | None = Field(None, max_length=2000, pattern=NO_NUL)
    description: str | None = Field(None, max_length=5000, pattern=NO_NUL)
    active: bool = True
    hidden: bool = False
    uses_codes: bool = False


class CodesIn(Model):
    codes: list[Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]] = Field(
        min_length=1, max_length=10_000
    )


class CodesOut(BaseModel):
    added: int
    skipped: int
    free: int


class RewardOut(BaseModel):
    key: str
    name: str
    kind: str
    supplier: str | None
    category: str | None
    description: str | None
    image_url: str | None
    currency: str
    price: int | str
    regular_price: int | str
    on_sale: bool
    cash: str | None
    cash_currency: str | None
    stock: int | None
    sold: int
    left: int | None
    sold_out: bool
    limit: dict[str, Any] | None
    tiers: list[str]
    tier_names: list[str]
    promos: list[dict[str, Any]]
    active: bool
    hidden: bool
    uses_codes: bool
    eligible: bool
    text: str


class OrderIn(Model):
    member_id: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    reward: str = Field(min_length=1, max_length=64)
    quantity: int = Field(1, ge=1, le=MAX_QUANTITY)
    idempotency_key: IdempotencyKey = None


class TransitionIn(Model):
    shipping_reference: Text | None = Field(None, description="required to fulfil a physical reward")
    reason: Text | None = None


class OrderOut(BaseModel):
    order_id: int
    member_id: str
    reward: str
    reward_name: str
    kind: str
    quantity: int
    currency: str
    unit_price: int | str
    points: int | str
    cash: str | None
    cash_currency: str | None
    promo: bool
    status: str
    shipping_reference: str | None
    codes: list[str]
    history: list[dict[str, Any]]
    placed_at: str
    updated_at: str
    replayed: bool
    text: str


class OrderPage(BaseModel):
    orders: list[OrderOut]
    next_cursor: str | None


class HoldIn(Model):
    member_id: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    currency: str = Field(min_length=1, max_length=64)
    amount: Amount
    timeout_seconds: int | None = Field(None, ge=10, le=30 * 86400, description="default 900")
    reference: Text | None = Field(None, description="the checkout this hold pays for")
    idempotency_key: IdempotencyKey = None


class HoldOut(BaseModel):
    hold_id: int
    member_id: str
    currency: str
    amount: int | str
    status: Literal["active", "captured", "released", "expired"]
    reference: str | None
    expires_at: str
    created_at: str
    closed_at: str | None
    replayed: bool
    text: str


class ExpiringOut(BaseModel):
    member_id: str
    days: int
    expiring: list[Expiring]


class RedemptionRow(BaseModel):
    key: str
    name: str
    currency: str
    orders: int
    units: int
    points: int | str
    returned_orders: int
    text: str | None = None


class RedemptionsOut(BaseModel):
    since: str | None
    until: str | None
    by_reward: list[RedemptionRow]
    by_category: list[RedemptionRow]
    by_tier: list[RedemptionRow]


# --- rewards --------------------------------------------------------------------------------
@router.get("/rewards", response_model=list[RewardOut], summary="The mall's rewards, priced now")
def list_rewards(
    who: MemberRead,
    conn: ReadConn,
    category: Annotated[str | None, Query(max_length=100, pattern=NO_NUL)] = None,
    everything: Annotated[
        bool, Query(alias="all", description="inactive and hidden ones too (not for member tokens)")
    ] = False,
) -> Any:
    """Members see active, listed rewards (with `eligible` for their tier); keys may ask for all."""
    loaded = program_of(conn, who)
    tier = None
    if who.scope == "member" and who.member_id is not None:
        tier = members.get(conn, loaded.program_id, who.member_id).tier
    found = mall.listing(
        conn, loaded.program_id, category=category, include_hidden=everything and who.scope != "member"
    )
    now = utcnow()
    return [mall.as_json(r, loaded.program, now, tier=tier) for r in found]


@router.get("/rewards/{reward_key}", response_model=RewardOut, summary="One reward, priced now")
def get_reward(who: MemberRead, conn: ReadConn, reward_key: RewardKey) -> Any:
    loaded = program_of(conn, who)
    return mall.as_json(mall.show(conn, loaded.program_id, reward_key), loaded.program, utcnow())


@router.put("/rewards/{reward_key}", response_model=RewardOut, summary="Create or replace a reward")
def put_reward(who: Admin, conn: Conn, reward_key: RewardKey, body: RewardIn, response: Response) -> Any:
    """Admin only. What it has sold is kept; a stock below that is refused. 201 when new."""
    loaded = program_of(conn, who)
    fields = body.model_dump(exclude_none=True)
    fields["price"] = number(body.price)
    for i, promo in enumerate(body.promos):
        fields["promos"][i]["price"] = number(promo.price)
    stored, created = mall.put(conn, loaded, reward_key, fields, now=utcnow())
    response.status_code = 201 if created else 200
    return mall.as_json(stored, loaded.program, utcnow())


@router.post("/rewards/{reward_key}/codes", response_model=CodesOut, summary="Add codes to a digital reward's pool")
def upload_codes(who: Admin, conn: Conn, reward_key: RewardKey, body: CodesIn) -> Any:
    """Each code is issued to exactly one order; codes already in the pool are skipped."""
    return mall.upload_codes(conn, who.program_id, reward_key, body.codes, now=utcnow())


# --- orders ---------------------------------------------------------------------------------
@router.post("/orders", response_model=OrderOut, status_code=201, summary="Redeem a reward")
def place_order(who: Ingest, conn: Conn, body: OrderIn) -> Any:
    """Checks the tier gate, the limit and the stock, spends the points (soonest-expiring first)
    and issues codes, all or nothing. Idempotent on `idempotency_key`."""
    loaded = program_of(conn, who)
    order = orders.place(
        conn,
        loaded,
        body.member_id,
        body.reward,
        quantity=body.quantity,
        key=body.idempotency_key,
        now=utcnow(),
        actor=who.name,
    )
    return order.as_json(loaded.program)


@router.get("/orders", response_model=OrderPage, summary="Orders, newest first")
def list_orders(
    who: MemberRead,
    conn: ReadConn,
    member_id: Annotated[str | None, Query(min_length=1, max_length=200, pattern=NO_NUL)] = None,
    status: Annotated[
        Literal["placed", "confirmed", "fulfilled", "completed", "cancelled", "refunded"] | None, Query()
    ] = None,
    cursor: Annotated[str | None, Query(max_length=19, pattern=r"^\d+$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Any:
    """A member token sees its own member's orders only."""
    if who.scope == "member":
        member_id = member_id or who.member_id
        member_visible(who, member_id or "")
    loaded = program_of(conn, who)
    before = min(int(cursor), 2**63 - 1) if cursor else None
    page, next_cursor = orders.listing(conn, loaded, member_id=member_id, status=status, before=before, limit=limit)
    return {"orders": [o.as_json(loaded.program) for o in page], "next_cursor": next_cursor}


@router.get("/orders/{order_id}", response_model=OrderOut, summary="One order")
def get_order(who: MemberRead, conn: ReadConn, order_id: OrderId) -> Any:
    loaded = program_of(conn, who)
    order = orders.get(conn, loaded, order_id)
    _visible(who, order.member_id, f"no order {order_id} in this program")
    return order.as_json(loaded.program)


@router.post("/orders/{order_id}/{action}", response_model=OrderOut, summary="Move an order on, or back")
def move_order(who: Ingest, conn: Conn, order_id: OrderId, action: Action, body: TransitionIn | None = None) -> Any:
    """`confirm`, `fulfil` (a physical reward needs `shipping_reference`), `complete`; `cancel`
    (placed or confirmed: points and stock go back) or `refund` (fulfilled or completed: points go
    back). Points return into the lots they were taken from, with their expiry. 409 when the
    order's state does not allow it."""
    loaded = program_of(conn, who)
    given = body or TransitionIn(shipping_reference=None, reason=None)
    order = orders.transition(
        conn,
        loaded,
        order_id,
        action,
        shipping_reference=given.shipping_reference,
        reason=given.reason,
        actor=who.name,
        now=utcnow(),
    )
    return order.as_json(loaded.program)


# --- holds ----------------------------------------------------------------------------------
@router.post("/holds", response_model=HoldOut, status_code=201, summary="Hold points for a checkout")
def create_hold(who: Ingest, conn: Conn, body: HoldIn) -> Any:
    """Moves the amount from available to held until captured, released or timed out."""
    loaded = program_of(conn, who)
    now = utcnow()
    hold = holds.create(
        conn,
        loaded,
        body.member_id,
        body.currency,
        number(body.amount),
        timeout_seconds=body.timeout_seconds,
        reference=body.reference,
        key=body.idempotency_key,
        now=now,
        actor=who.name,
    )
    return hold.as_json(loaded.program, now)


@router.get("/holds/{hold_id}", response_model=HoldOut, summary="One hold")
def get_hold(who: MemberRead, conn: ReadConn, hold_id: HoldId) -> Any:
    """A hold past its time-out shows as expired at once."""
    loaded = program_of(conn, who)
    hold = holds.get(conn, loaded, hold_id)
    _visible(who, hold.member_id, f"no hold {hold_id} in this program")
    return hold.as_json(loaded.program, utcnow())


@router.post(
    "/holds/{hold_id}/capture",
    response_model=HoldOut,
    summary="Spend the held points",
    responses={409: {"description": "released, or timed out (`hold_expired`: its points went back)"}},
)
def capture_hold(who: Ingest, conn: Conn, hold_id: HoldId) -> Any:
    """Idempotent: capturing a captured hold returns it unchanged (`replayed`)."""
    loaded = program_of(conn, who)
    now = utcnow()
    hold = holds.capture(conn, loaded, hold_id, now=now, actor=who.name)
    if hold.outcome == "expired":
        # Its points went back in this transaction, which must commit: answer, do not raise.
        err = HoldExpired("this hold timed out and its points went back to the member")
        return _problem(err)
    return hold.as_json(loaded.program, now)


@router.post("/holds/{hold_id}/release", response_model=HoldOut, summary="Give the held points back")
def release_hold(who: Ingest, conn: Conn, hold_id: HoldId) -> Any:
    """Into the lots they came from; releasing again changes nothing."""
    loaded = program_of(conn, who)
    now = utcnow()
    return holds.release(conn, loaded, hold_id, now=now, actor=who.name).as_json(loaded.program, now)


# --- expiring points and redemption figures -------------------------------------------------
@router.get("/members/{member_id}/expiring", response_model=ExpiringOut, summary="Points expiring within N days")
def expiring(
    who: MemberRead, conn: ReadConn, member_id: MemberId, days: Annotated[int, Query(ge=1, le=3660)] = 30
) -> Any:
    """By currency and day, in the program's time zone (the member view shows 30 days). The
    `points.expiring` webhook (`kinloop remind --days N`) sends the same to the brand."""
    member_visible(who, member_id)
    loaded = program_of(conn, who)
    return {
        "member_id": member_id,
        "days": days,
        "expiring": member_view.expiring(conn, loaded, member_id, now=utcnow(), days=days),
    }


@router.get("/program/redemptions", response_model=RedemptionsOut, summary="Redemptions by reward, category and tier")
def redemptions(
    who: Read,
    conn: ReadConn,
    since: Annotated[datetime | None, Query(description="ISO 8601, inclusive")] = None,
    until: Annotated[datetime | None, Query(description="ISO 8601, exclusive")] = None,
) -> Any:
    """Orders placed in the period: orders, units and points, without cancelled or refunded
    ones (counted as `returned_orders`)."""
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise InvalidInput(f"{name} needs a UTC offset", field=name)
    loaded = program_of(conn, who)
    return mall.redemptions(conn, loaded, since=since, until=until)


def _visible(who: Principal, member_id: str, missing: str) -> None:
    """A member token sees its own orders and holds only; others are as if they did not exist."""
    if who.scope == "member" and who.member_id != member_id:
        raise NotFound(missing, field="id")


def _problem(exc: HoldExpired) -> JSONResponse:
    return problem(409, exc.code, exc.detail)
