"""Check-in and campaign endpoints: `POST /v1/members/{id}/check-ins`, `GET /v1/program/campaigns`."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import AfterValidator, BaseModel, Field

from kinloop.api.deps import Conn, Ingest, Read, ReadConn, program_of
from kinloop.api.schemas import MemberId, Model, _in_calendar
from kinloop.clock import utcnow
from kinloop.domain.errors import InvalidInput
from kinloop.domain.events import parse_timestamp
from kinloop.services import campaigns as campaign_svc
from kinloop.services import checkin as checkin_svc

router = APIRouter(prefix="/v1")


class CheckinIn(Model):
    """A check-in now (or at `occurred_at`), or with `makeup_for` a make-up card for a missed day."""

    occurred_at: Annotated[str, AfterValidator(_in_calendar)] | None = Field(
        None, description="ISO 8601 with an offset: when the member checked in (default: now)"
    )
    makeup_for: str | None = Field(
        None, pattern=r"^\d{4}-\d{2}-\d{2}$", description="a missed day (YYYY-MM-DD) to fill with a make-up card"
    )


class CheckinOut(BaseModel):
    index: int
    event_id: str | None
    status: str = Field(description="accepted, or duplicate: already checked in that day (the first reply)")
    awards: list[dict[str, Any]]
    checkin: dict[str, Any] = Field(description="status, day, streak and `text` in the program's words")


class CampaignList(BaseModel):
    campaigns: list[dict[str, Any]]


@router.post(
    "/members/{member_id}/check-ins",
    response_model=CheckinOut,
    summary="Check a member in for the day (idempotent per member and local day)",
)
def post_check_in(who: Ingest, conn: Conn, member_id: MemberId, body: CheckinIn | None = None) -> Any:
    """The day is the member's (profile `timezone`, else the program's); a second check-in that
    day returns the first reply. A refused make-up is a 409 and changes nothing."""
    loaded = program_of(conn, who)
    now = utcnow()
    at = parse_timestamp(body.occurred_at, field="occurred_at") if body and body.occurred_at else now
    makeup = _day(body.makeup_for) if body and body.makeup_for else None
    return checkin_svc.check_in(conn, loaded, member_id, at=at, now=now, makeup_for=makeup)


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"{text!r} is not a date (YYYY-MM-DD)", field="makeup_for") from None


@router.get("/program/campaigns", response_model=CampaignList, summary="The program's campaigns: past, now, next")
def get_campaigns(who: Read, conn: ReadConn) -> Any:
    loaded = program_of(conn, who)
    return {"campaigns": campaign_svc.listing(conn, loaded.program_id, loaded.program, utcnow())}
