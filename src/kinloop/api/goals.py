"""The /v1/goals endpoints: admins create shared goals; members donate on their own behalf."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
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
from kinloop.api.routes import number
from kinloop.api.schemas import NO_NUL, Id, Model
from kinloop.clock import utcnow
from kinloop.services import goals

router = APIRouter()
Key = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
GoalKey = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]


class GoalIn(Model):
    key: Key
    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL, examples=["Plant a tree"])
    currency: Key
    target: str | int
    repeat: bool = Field(False, description="start the next round when the target is reached")


class DonationIn(Model):
    member_id: Id
    amount: str | int
    key: Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)] = Field(
        description="idempotency key: a repeat returns the first donation"
    )


@router.post("/v1/goals", status_code=201, summary="Create a shared goal (admin)")
def create_goal(who: Admin, conn: Conn, body: GoalIn) -> Any:
    return goals.create(
        conn,
        program_of(conn, who),
        key=body.key,
        name=body.name,
        currency_key=body.currency,
        target=number(body.target),
        repeat=body.repeat,
        now=utcnow(),
        actor=who.name,
    )


@router.get("/v1/goals", summary="The program's shared goals, with progress and donors")
def list_goals(who: MemberRead, conn: ReadConn) -> Any:
    return goals.listing(conn, program_of(conn, who))


@router.get("/v1/goals/{goal_key}", summary="One goal: progress, donors, milestones")
def get_goal(who: MemberRead, conn: ReadConn, goal_key: GoalKey) -> Any:
    return goals.show(conn, program_of(conn, who), goal_key)


@router.post("/v1/goals/{goal_key}/donations", summary="Donate points to a goal")
def donate(who: MemberAct, conn: Conn, goal_key: GoalKey, body: DonationIn) -> Any:
    """Final and public; at most what the round still misses is taken."""
    member_visible(who, body.member_id)
    return goals.donate(
        conn,
        program_of(conn, who),
        goal_key,
        body.member_id,
        amount=number(body.amount),
        donation_key=body.key,
        now=utcnow(),
        actor=who.name,
    )


@router.get("/v1/program/goals", summary="Goal figures: rounds reached, donations, donors")
def goal_stats(who: Read, conn: ReadConn) -> Any:
    return goals.stats(conn, program_of(conn, who))
