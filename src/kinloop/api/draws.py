"""The /v1/draws endpoints: admins create and close draws; members enter on their own behalf
(ingest key or member token); anyone with read access sees the odds and the public record."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path
from pydantic import AwareDatetime, Field

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
from kinloop.api.routes import number
from kinloop.api.schemas import NO_NUL, Id, Model
from kinloop.clock import utcnow
from kinloop.domain.draws import Guarantee
from kinloop.services import draws

router = APIRouter()
Key = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
DrawKey = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
Amount = str | int
When = Annotated[AwareDatetime, Field(strict=False)]


class PrizeIn(Model):
    """One prize: `odds` is an integer weight, or a decimal probability (all probabilities sum to 1)."""

    key: Key
    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    kind: Literal["points", "reward", "coupon", "nothing"]
    odds: Amount = Field(examples=[10, "0.25"])
    stock: Annotated[int, Field(ge=0, le=10**12)] | None = Field(None, description="omit for unlimited")
    amount: Amount | None = Field(None, description="points prizes: how many points")
    currency: Key | None = Field(None, description="points prizes: defaults to the draw's currency")
    reward: Id | None = Field(None, description="reward and coupon prizes: what is handed out")
    value: Amount | None = Field(None, description="what the prize costs the program, in the draw's currency")


class GuaranteeIn(Model):
    after: Annotated[int, Field(ge=1, le=1000)]
    prize: Key


class OddsIn(Model):
    prizes: list[PrizeIn] = Field(max_length=100)
    odds_total: Amount | None = Field(None, description="what the odds must sum to (probabilities: 1)")


class DrawIn(OddsIn):
    key: Key
    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    currency: Key
    cost: Amount
    opens_at: When
    closes_at: When
    daily_limit: Annotated[int, Field(ge=1, le=10000)] | None = None
    guarantee: GuaranteeIn | None = None


class EntryIn(Model):
    member_id: Id
    entry_key: Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)] = Field(
        description="idempotency key: a repeat returns the first result and is not charged again"
    )


def _prizes(body: OddsIn) -> list[draws.PrizeIn]:
    return [
        draws.PrizeIn(
            p.key,
            p.name,
            p.kind,
            number(p.odds),
            p.stock,
            number(p.amount) if p.amount is not None else None,
            p.currency,
            p.reward,
            number(p.value) if p.value is not None else None,
        )
        for p in body.prizes
    ]


def _total(body: OddsIn) -> Decimal | None:
    return number(body.odds_total) if body.odds_total is not None else None


def spec_from(body: DrawIn) -> draws.DrawIn:
    """A draw as the service takes it, from the request body (also what `kinloop draws create` reads)."""
    return draws.DrawIn(
        key=body.key,
        name=body.name,
        currency=body.currency,
        cost=number(body.cost),
        opens_at=body.opens_at,
        closes_at=body.closes_at,
        prizes=_prizes(body),
        odds_total=_total(body),
        daily_limit=body.daily_limit,
        guarantee=Guarantee(body.guarantee.after, body.guarantee.prize) if body.guarantee else None,
    )


@router.post("/v1/draws", status_code=201, summary="Create a draw (admin)")
def create_draw(who: Admin, conn: Conn, body: DrawIn) -> Any:
    """The reply publishes the seed's commitment; the seed itself is shown once the draw closes."""
    loaded = program_of(conn, who)
    spec = spec_from(body)
    return draws.create(conn, loaded, spec, now=utcnow(), actor=who.name)


@router.get("/v1/draws", summary="The program's draws, with odds, stock and expected cost")
def list_draws(who: MemberRead, conn: ReadConn) -> Any:
    return draws.listing(conn, program_of(conn, who), now=utcnow())


@router.get("/v1/draws/{draw_key}", summary="One draw")
def get_draw(who: MemberRead, conn: ReadConn, draw_key: DrawKey) -> Any:
    return draws.show(conn, program_of(conn, who), draw_key, now=utcnow())


@router.put("/v1/draws/{draw_key}/odds", summary="Put a new odds table (with stock) in force (admin)")
def put_odds(who: Admin, conn: Conn, draw_key: DrawKey, body: OddsIn) -> Any:
    """Later entries use the new table; earlier ones keep the version they were drawn with."""
    loaded = program_of(conn, who)
    return draws.replace_odds(
        conn, loaded, draw_key, _prizes(body), odds_total=_total(body), now=utcnow(), actor=who.name
    )


@router.post("/v1/draws/{draw_key}/entries", summary="Enter a draw for a member")
def enter(who: MemberAct, conn: Conn, draw_key: DrawKey, body: EntryIn) -> Any:
    """Pays the cost in points and draws the prize at once; idempotent on `entry_key`."""
    member_visible(who, body.member_id)
    loaded = program_of(conn, who)
    result = draws.enter(conn, loaded, draw_key, body.member_id, entry_key=body.entry_key, now=utcnow(), actor=who.name)
    return result.as_json(loaded.program)


@router.post("/v1/draws/{draw_key}/close", summary="Close a draw now and reveal its seed (admin)")
def close_draw(who: Admin, conn: Conn, draw_key: DrawKey) -> Any:
    return draws.close(conn, program_of(conn, who), draw_key, now=utcnow(), actor=who.name)


@router.get("/v1/draws/{draw_key}/record", summary="The public record: commitment, seed once closed, every entry")
def draw_record(who: MemberRead, conn: ReadConn, draw_key: DrawKey) -> Any:
    """Enough to recompute every result (see the scheme in the draw); members appear as opaque handles."""
    return draws.record(conn, program_of(conn, who), draw_key, now=utcnow())


@router.get("/v1/program/draws", summary="Draw figures: entries, prizes given, points collected and paid out")
def draw_stats(who: Read, conn: ReadConn) -> Any:
    return draws.stats(conn, program_of(conn, who), now=utcnow())
