"""Leaderboard endpoints: a board's top N and one member's rank (member tokens may read both,
their own rank only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from kinloop.api.deps import MemberRead, ReadConn, member_visible, program_of
from kinloop.api.schemas import NO_NUL, MemberId
from kinloop.clock import utcnow
from kinloop.services import leaderboards

router = APIRouter(prefix="/v1/leaderboards")
# Reading boards is open to whoever may read a member: read keys and member tokens.
BoardKey = Annotated[str, Path(min_length=1, max_length=64, pattern=NO_NUL)]
PeriodQuery = Annotated[
    str | None,
    Query(
        max_length=10,
        pattern=r"^\d{4}-(W\d{2}|\d{2}|\d{2}-\d{2})$",
        description="a day (2026-03-05), month (2026-03) or ISO week (2026-W10) in the period; default now",
    ),
]


class Measure(BaseModel):
    currency: str | None = None
    event: str | None = None
    unit: str | None = None


class Head(BaseModel):
    board: str
    name: str
    period: str = Field(examples=["2026-W10"])
    group: str | None
    measure: Measure
    order: str


class Entry(BaseModel):
    rank: int
    member_id: str
    score: int | str
    reached_at: str
    text: str


class BoardOut(Head):
    members: int = Field(description="members on the board in this period and group")
    entries: list[Entry]


class StandingOut(Head):
    member_id: str
    rank: int | None = Field(description="null: not on the board in this period")
    of: int
    score: int | str
    text: str = Field(examples=["3rd of 120 on Top answerers this week (2026-W10), with 12 answers"])


@router.get("/{key}", response_model=BoardOut, summary="A leaderboard's top N")
def get_board(
    who: MemberRead,
    conn: ReadConn,
    key: BoardKey,
    period: PeriodQuery = None,
    group: Annotated[str | None, Query(min_length=1, max_length=200, pattern=NO_NUL)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
) -> Any:
    """Ranked by score, then who reached it first, then member id; `group` is required on boards
    ranked per profile attribute (a city)."""
    loaded = program_of(conn, who)
    return leaderboards.top(conn, loaded, key, period=period, group=group, limit=limit, now=utcnow())


@router.get("/{key}/members/{member_id}", response_model=StandingOut, summary="A member's rank on a leaderboard")
def get_standing(
    who: MemberRead, conn: ReadConn, key: BoardKey, member_id: MemberId, period: PeriodQuery = None
) -> Any:
    """In the member's own group on grouped boards."""
    member_visible(who, member_id)
    loaded = program_of(conn, who)
    return leaderboards.standing(conn, loaded, key, member_id, period=period, now=utcnow())
