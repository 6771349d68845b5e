"""Request and response bodies of the HTTP API (their JSON Schema is in /openapi.json)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field, JsonValue

# Text that is stored in a text column: PostgreSQL cannot store NUL characters.
NO_NUL = r"^[^\x00]*$"
# Ids in paths, as the store keeps them.
MemberId = Annotated[str, Path(min_length=1, max_length=200, pattern=NO_NUL)]
EventId = Annotated[str, Path(min_length=1, max_length=200, pattern=NO_NUL)]
Id = Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL)]
Reason = Annotated[str, Field(min_length=1, max_length=500, pattern=NO_NUL)]
IdempotencyKey = Annotated[str | None, Field(max_length=200, pattern=NO_NUL)]
# Far enough from the ends of the calendar that the instant exists in every time zone.
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)


class Model(BaseModel):
    """A request body: no unknown fields, no type coercion (`true` is not 1), and, as in JSON
    itself, no NaN or Infinity (Python's JSON parser lets them through)."""

    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


def _in_calendar(value: str) -> str:
    # Only the range is checked here; the event's own checks (format, offset, not in the
    # future) answer per event, with its index in a batch.
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return value
    if stamp.tzinfo is not None and not EARLIEST <= stamp <= LATEST:
        raise ValueError("must be between 0001-01-02 and 9999-12-30 (UTC)")
    return value


class EventIn(Model):
    """A fact from outside. Attributes are checked against the program's event type."""

    event_id: Id = Field(examples=["order-1001"])
    member_id: Id = Field(examples=["m-42"])
    type: str = Field(min_length=1, max_length=64, examples=["purchase"])
    occurred_at: Annotated[str, AfterValidator(_in_calendar)] = Field(
        description="ISO 8601 with an offset", examples=["2026-01-05T10:00:00Z"]
    )
    attributes: dict[str, JsonValue] = Field(default_factory=dict, examples=[{"amount": 120}])


class EventBatch(Model):
    events: list[EventIn] = Field(min_length=1, max_length=1000)


class Award(BaseModel):
    rule: str
    currency: str
    amount: int | str
    kind: str
    pending: bool
    text: str


class TierChange(BaseModel):
    from_: str | None = Field(alias="from")
    to: str | None
    text: str


class ItemError(BaseModel):
    code: str
    detail: str
    field: str | None = None


class BadgeEarned(BaseModel):
    badge: str
    level: str | None
    text: str = Field(examples=["earned Helpful (Silver)"])


class TaskCompleted(BaseModel):
    task: str
    period: str
    text: str = Field(examples=["completed Comment 3 times today"])


class EventResult(BaseModel):
    index: int
    event_id: str | None
    status: Literal["accepted", "duplicate", "rejected"]
    awards: list[Award] = Field(default_factory=list)
    tier_changed: TierChange | None = None
    badges: list[BadgeEarned] = Field(default_factory=list)
    tasks: list[TaskCompleted] = Field(default_factory=list)
    error: ItemError | None = None


class BatchResult(BaseModel):
    accepted: int
    duplicates: int
    rejected: int
    results: list[EventResult]


class TierRef(BaseModel):
    key: str
    name: str


class NextTier(BaseModel):
    key: str
    name: str
    missing: int | str
    text: str


class TierTerm(BaseModel):
    tier: str
    name: str
    until: str | None
    text: str
    locked: bool | None = None


class TierKeep(BaseModel):
    tier: str
    missing: int | str
    by: str
    text: str


class TierStatus(BaseModel):
    """Where the tier comes from and what keeps it: the earned tier and its qualification in the
    current window, grace, paid term, manual floor or lock, grandfathered tier."""

    source: str | None = Field(description="where the tier comes from: earned, paid, manual or kept")
    earned: str | None
    qualification: int | str
    qualification_text: str
    window: str
    grace_until: str | None
    paid: TierTerm | None
    manual: TierTerm | None
    kept: TierTerm | None
    keep: TierKeep | None


class Expiring(BaseModel):
    currency: str
    amount: int | str
    on: str
    text: str


class RewardOut(BaseModel):
    currency: str
    amount: int | str
    text: str


class BadgeLevelHeld(BaseModel):
    level: str | None
    name: str = Field(examples=["Helpful (Bronze)"])
    awarded_at: str


class BadgeNext(BaseModel):
    level: str | None
    name: str
    reward: RewardOut | None
    current: int | str | None = None
    target: int | str | None = None
    text: str | None = Field(None, examples=["12/50 to Helpful (Silver)"])


class BadgeOut(BaseModel):
    key: str
    name: str
    description: str
    earned: list[BadgeLevelHeld]
    next: BadgeNext | None


class TaskOut(BaseModel):
    key: str
    name: str
    every: Literal["once", "day", "week", "month"]
    period: str
    progress: int
    target: int
    done: bool
    text: str = Field(examples=["Comment 3 times today: 1/3"])
    reward: RewardOut | None


class QuotaOut(BaseModel):
    uses: int
    per: Literal["day", "week", "month", "year"] | None


class PrivilegeHeld(BaseModel):
    """A privilege the member holds through the current tier, with what is left this period."""

    key: str
    name: str
    kind: Literal["preferential", "function", "care", "service"]
    description: str
    quota: QuotaOut | None = Field(description="null: unlimited")
    window: Literal["always", "birthday_month"]
    used: int = Field(description="uses in the quota's current period (or ever)")
    remaining: int | None = Field(description="null: unlimited")
    usable_now: bool
    text: str = Field(examples=["1 of 2 left this month"])


class HeldOut(BaseModel):
    hold_id: int
    currency: str
    amount: int | str
    reference: str | None
    expires_at: str
    timed_out: bool


class HoldsOut(BaseModel):
    """Points reserved by holds (pending checkouts): per currency, in words, and each hold."""

    held: dict[str, int | str]
    text: dict[str, str]
    active: list[HeldOut]


class MemberOut(BaseModel):
    member_id: str
    balances: dict[str, int | str]
    pending: dict[str, int | str]
    tier: TierRef | None
    next_tier: NextTier | None
    tier_status: TierStatus | None = None
    expiring: list[Expiring]
    display: dict[str, str]
    badges: list[BadgeOut] = Field(default_factory=list, description="the program's badges: levels held, next")
    tasks: list[TaskOut] = Field(default_factory=list, description="the program's tasks, this period's progress")
    checkin: dict[str, Any] | None = Field(
        None, description="streak, checked in today, next reward and milestone, make-up cards left"
    )
    campaigns: dict[str, Any] | None = Field(None, description="campaigns running now for this member, and the next")
    privileges: list[PrivilegeHeld] = Field(default_factory=list)
    profile: dict[str, Any] = Field(default_factory=dict)
    holds: HoldsOut


class ProfileIn(Model):
    """What a brand's app knows of a member; `attributes` are visible to rule conditions."""

    display_name: str | None = Field(None, max_length=200)
    birthday: str | None = Field(None, description="YYYY-MM-DD", pattern=r"^\d{4}-\d{2}-\d{2}$")
    timezone: str | None = Field(None, max_length=64, examples=["Europe/Paris"])
    joined_at: str | None = Field(None, description="YYYY-MM-DD", pattern=r"^\d{4}-\d{2}-\d{2}$")
    attributes: dict[str, str | int | float | bool] = Field(default_factory=dict, max_length=100)


class LedgerEntry(BaseModel):
    entry_id: int
    kind: str
    currency: str
    amount: int | str
    signed: int | str
    from_: str = Field(alias="from")
    to: str
    event_id: str | None
    rule: str | None
    reason: str | None
    actor: str | None
    effective_at: str
    created_at: str
    text: str


class LedgerPage(BaseModel):
    entries: list[LedgerEntry]
    next_cursor: str | None


class AdjustmentIn(Model):
    currency: str = Field(min_length=1, max_length=64)
    amount: str | int = Field(description="positive credits, negative debits")
    reason: Reason
    idempotency_key: IdempotencyKey = None


class SpendIn(Model):
    currency: str = Field(min_length=1, max_length=64)
    amount: str | int
    reason: Reason
    idempotency_key: IdempotencyKey = None


class MovementOut(BaseModel):
    entry_id: int
    member_id: str
    currency: str
    amount: int
    balance: int
    replayed: bool
    text: str


class ReversalIn(Model):
    amount: str | int | None = Field(None, description="refund this much of the event's amount; omit for all")
    reason: Reason = "reversal"


class ReversalOut(BaseModel):
    event_id: str
    clawed_back: dict[str, int]
    unrecovered: dict[str, int]
    text: dict[str, str]
    unrecovered_text: dict[str, str]
    tier_changed: dict[str, str | None] | None = None


class TokenIn(Model):
    ttl_seconds: int = Field(900, ge=1, le=86400)


class TokenOut(BaseModel):
    token: str
    member_id: str
    expires_at: str


class VersionOut(BaseModel):
    version: int
    active: bool
    digest: str
    created_at: str


class VersionSource(VersionOut):
    source: str


class VersionIn(Model):
    source: str = Field(min_length=1, max_length=1_000_000, description="the program file, as YAML")
    activate: bool = True
    keep_tiers_until: AwareDatetime | None = Field(
        None, strict=False, description="when the ladder changes: members keep their current tier until then"
    )


class DiffOut(BaseModel):
    program: str
    from_version: int
    to_version: int
    diff: str


class Problem(BaseModel):
    """An error, as RFC 9457 problem details (`application/problem+json`)."""

    type: str
    title: str
    status: int
    code: str = Field(description="stable and machine-readable, e.g. insufficient_balance")
    detail: str = Field(description="for humans")
    field: str | None = Field(None, description="the offending field, when there is one")
    errors: list[dict[str, str]] | None = Field(
        None, description="every problem found: {field, message} in a request, {path, message} in a program file"
    )
