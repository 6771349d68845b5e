"""Campaigns and multipliers: when a campaign runs, whom it targets, and how multipliers stack.

Rules for the order of things (written once, here):
- A rule's caps and limits bound the rule's own amount; multipliers then scale what the rule gave.
- Multipliers apply to awards of earning rules only (not first-time bonuses, check-in or campaign
  bonuses). A tier's multiplier applies to points currencies; a campaign's to the rules and
  currencies it names (all, if it names none).
- Several multipliers combine by the program's stacking policy (multiply, add their extras, or
  keep the highest); the total never exceeds the cap. The result rounds down to minor units.
- A budgeted multiplier campaign pays for the extra it adds (the award with it minus the award
  without it); a partial grant when only part of its budget is left.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

from kinloop.domain.program import Campaign, MemberDay, Multipliers, Program, Rule, budget_key

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
CampaignStatus = Literal["past", "active", "upcoming"]


def on_member_day(day: MemberDay, local: date) -> bool:
    if day.weekday is not None:
        return local.weekday() == day.weekday
    return local.day == day.day_of_month


def is_active(campaign: Campaign, at: datetime, tz: ZoneInfo) -> bool:
    """Whether the campaign runs at `at`: from `starts_at` (inclusive) to `ends_at` (exclusive),
    and on its member day (a day in the program's time zone) if it has one."""
    if campaign.starts_at is not None and at < campaign.starts_at:
        return False
    if campaign.ends_at is not None and at >= campaign.ends_at:
        return False
    if campaign.member_day is not None:
        return on_member_day(campaign.member_day, at.astimezone(tz).date())
    return True


def next_start(campaign: Campaign, after: datetime, tz: ZoneInfo) -> datetime | None:
    """When the campaign next starts running after `after` (None: never again)."""
    if campaign.ends_at is not None and after >= campaign.ends_at:
        return None
    if campaign.member_day is None:
        if campaign.starts_at is not None and campaign.starts_at > after:
            return campaign.starts_at
        return None
    local = after.astimezone(tz).date() + timedelta(days=1)
    if campaign.starts_at is not None:
        local = max(local, campaign.starts_at.astimezone(tz).date())
    for _ in range(62 * 12):  # a day of the month such as the 31st recurs within months
        if on_member_day(campaign.member_day, local):
            start = datetime.combine(local, time(), tzinfo=tz)
            if campaign.starts_at is not None:
                start = max(start, campaign.starts_at)
            if campaign.ends_at is not None and start >= campaign.ends_at:
                return None
            return start
        local += timedelta(days=1)
    return None


def status(campaign: Campaign, now: datetime, tz: ZoneInfo) -> CampaignStatus:
    if is_active(campaign, now, tz):
        return "active"
    return "upcoming" if next_start(campaign, now, tz) is not None else "past"


def targets(campaign: Campaign, tier: str | None, member_ctx: Any) -> bool:
    """Whether the campaign is for this member: one of its tiers, and its condition over `member`."""
    if campaign.tiers and tier not in campaign.tiers:
        return False
    if campaign.condition is None:
        return True
    try:
        return campaign.condition.compiled.execute(member_ctx) is True
    except Exception:  # a profile attribute the member lacks: the campaign is not for them
        return False


def covers(campaign: Campaign, rule: Rule) -> bool:
    """Whether a multiplier campaign multiplies this rule's awards."""
    if campaign.rules and rule.key not in campaign.rules:
        return False
    return not campaign.currencies or rule.currency in campaign.currencies


def combine(factors: Iterable[Decimal], policy: Multipliers) -> Decimal:
    """The total multiplier of several, by the stacking policy, at most the cap."""
    values = list(factors)
    if not values:
        return Decimal(1)
    if policy.stacking == "multiply":
        total = Decimal(1)
        for v in values:
            total *= v
    elif policy.stacking == "add":
        total = 1 + sum((v - 1 for v in values), Decimal(0))
    else:
        total = max(values)
    if policy.cap is not None and total > policy.cap:
        total = policy.cap
    return total


def scaled(amount: int, multiplier: Decimal) -> int:
    """An amount in minor units times a multiplier, rounded down to minor units."""
    return int((amount * multiplier).to_integral_value(ROUND_FLOOR))


@dataclass(frozen=True, slots=True)
class Factor:
    """One multiplier behind an award: a campaign's or the member's tier's."""

    source: Literal["campaign", "tier"]
    key: str
    name: str
    value: Decimal

    def words(self) -> str:
        return f"×{self.value.normalize():f} {self.name}"


def take(budgets: MutableMapping[str, int] | None, key: str, want: int) -> int:
    """Take up to `want` from the budget left under `key`; what is granted."""
    if budgets is None or want <= 0:
        return max(want, 0)
    granted = min(want, max(budgets.get(key, 0), 0))
    budgets[key] = budgets.get(key, 0) - granted
    return granted


def budget_totals(program: Program) -> dict[str, int]:
    """The budget of every budgeted rule and campaign, by budget key, in minor units."""
    out = {budget_key("rule", r.key): r.budget for r in program.rules if r.budget is not None}
    out.update({budget_key("campaign", c.key): c.budget for c in program.campaigns if c.budget is not None})
    return out


def describe_schedule(campaign: Campaign) -> str:
    """When a campaign runs, in words: `every Wednesday`, `on day 15 of each month`, `from ... until ...`."""
    parts = []
    day = campaign.member_day
    if day is not None:
        if day.weekday is not None:
            parts.append(f"every {WEEKDAYS[day.weekday].capitalize()}")
        else:
            parts.append(f"on day {day.day_of_month} of each month")
    if campaign.starts_at is not None:
        parts.append(f"from {campaign.starts_at.isoformat()}")
    if campaign.ends_at is not None:
        parts.append(f"until {campaign.ends_at.isoformat()}")
    return " ".join(parts)


def active_campaigns(program: Program, at: datetime) -> list[Campaign]:
    return [c for c in program.campaigns if is_active(c, at, program.timezone)]
