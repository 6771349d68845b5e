"""Privilege endpoints: a member's app uses one; operators read utilisation."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from kinloop.api.deps import Conn, Ingest, Read, ReadConn, program_of
from kinloop.api.schemas import NO_NUL, MemberId, Model
from kinloop.clock import utcnow
from kinloop.domain.errors import InvalidInput
from kinloop.services import privileges

router = APIRouter(prefix="/v1")
PrivilegeKey = Annotated[str, Path(min_length=1, max_length=64, pattern=NO_NUL)]


class UseIn(Model):
    """A use of a privilege; repeating the same `idempotency_key` returns the first reply."""

    idempotency_key: str = Field(min_length=1, max_length=200, pattern=NO_NUL, examples=["order-1234-coupon"])


class UseOut(BaseModel):
    member_id: str
    privilege: str
    name: str
    kind: str
    tier: str | None
    used_at: str
    remaining: int | None = Field(description="uses left this period after this one; null: unlimited")
    text: str = Field(examples=["Free drink used; 1 of 2 left this month"])
    replayed: bool


class UsageRow(BaseModel):
    privilege: str
    name: str
    tier: str
    tier_name: str
    members: int = Field(description="members in the tier now")
    uses: int
    users: int = Field(description="distinct members who used it")
    use_rate: str | None = Field(description="uses / members, a decimal string; null when the tier is empty")
    text: str


class UsageOut(BaseModel):
    period: Literal["day", "week", "month", "year"]
    from_: str = Field(alias="from")
    to: str
    rows: list[UsageRow]


@router.post(
    "/members/{member_id}/privileges/{privilege_key}/uses",
    response_model=UseOut,
    summary="Use a privilege",
)
def use_privilege(who: Ingest, conn: Conn, member_id: MemberId, privilege_key: PrivilegeKey, body: UseIn) -> Any:
    """Refused (409) unless the member's current tier holds it, it is in its window (a birthday
    month) and quota is left this period. Idempotent on `idempotency_key`."""
    loaded = program_of(conn, who)
    return privileges.use(conn, loaded, member_id, privilege_key, key=body.idempotency_key, now=utcnow())


@router.get("/program/privileges/usage", response_model=UsageOut, summary="Use rate per privilege and tier")
def privilege_usage(
    who: Read,
    conn: ReadConn,
    period: Annotated[Literal["day", "week", "month", "year"], Query()] = "month",
    on: Annotated[str | None, Query(description="a day in the period (YYYY-MM-DD); default today")] = None,
) -> Any:
    """Uses in the period containing `on`, by the tier that held the privilege, against the
    number of members in that tier now."""
    loaded = program_of(conn, who)
    return privileges.usage(conn, loaded, per=period, on=day(on), now=utcnow())


def day(text: str | None) -> date | None:
    if text is None:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{text!r} is not a date (YYYY-MM-DD)", field="on") from None
