"""Leaderboards: what an event adds to each board, board periods, and the ranking order.

Ranking order (deterministic, documented for members): the higher score first; on equal
scores, whoever reached the score first (the time of the last event that raised it); then
the member id, in code-point order.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from kinloop.domain.errors import InvalidInput
from kinloop.domain.periods import period_key
from kinloop.domain.program import Leaderboard, Program


def board_period_key(board: Leaderboard, day: date) -> str:
    """The stored key of the board's period that contains `day` (`w2026-05`, `all`, ...)."""
    return period_key("lifetime" if board.period == "all_time" else board.period, day)


def group_of(board: Leaderboard, profile: Mapping[str, Any]) -> str:
    """The member's group on the board: the profile attribute's value ('' ungrouped or unknown)."""
    if board.group_by is None:
        return ""
    value = profile.get(board.group_by)
    return "" if value is None or isinstance(value, dict | list) else str(value)[:200]


@dataclass(frozen=True, slots=True)
class Delta:
    """What one event adds to one member's score on one board and period."""

    board: str
    period: str
    group: str
    amount: int


def deltas(
    boards: Sequence[Leaderboard],
    *,
    event_type: str,
    day: date,
    earned: Mapping[str, int],
    profile: Mapping[str, Any],
) -> list[Delta]:
    """The score changes of one event that happened on `day` and earned `earned` (per currency)."""
    out = []
    for board in boards:
        if board.event is not None:
            amount = 1 if board.event == event_type else 0
        else:
            amount = earned.get(board.currency or "", 0)
        if amount:
            out.append(Delta(board.key, board_period_key(board, day), group_of(board, profile), amount))
    return out


_WEEK = re.compile(r"^(\d{4})-W(\d{2})$")
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")


def day_of_period(text: str) -> date:
    """A day inside the period a caller names: `2026-03-05`, `2026-03` (month) or `2026-W10` (ISO week)."""
    try:
        if m := _WEEK.match(text):
            return date.fromisocalendar(int(m[1]), int(m[2]), 1)
        if m := _MONTH.match(text):
            return date(int(m[1]), int(m[2]), 1)
        return date.fromisoformat(text)
    except ValueError:
        pass
    raise InvalidInput(
        f"{text!r} is not a period: give a day (2026-03-05), a month (2026-03) or an ISO week (2026-W10)",
        field="period",
    )


def period_name(board: Leaderboard, day: date) -> str:
    """The board's period containing `day`, as people write it: `2026-W10`, `2026-03`, `all time`."""
    if board.period == "day":
        return day.isoformat()
    if board.period == "week":
        iso = day.isocalendar()
        return f"{iso.year}-W{iso.week:02d}"
    if board.period == "month":
        return f"{day.year}-{day.month:02d}"
    return "all time"


def score_text(program: Program, board: Leaderboard, score: int) -> str:
    """A score in the program's words: `120 ★`, `12 answers`."""
    if board.currency is not None:
        return program.currencies[board.currency].display(score)
    return f"{score:,} {board.unit_one if score == 1 else board.unit}"


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 21st."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def rank_text(program: Program, board: Leaderboard, rank: int | None, of: int, score: int, day: date) -> str:
    """`3rd of 120 on Top answerers (2026-W10), with 12 answers`."""
    where = f"{board.name} ({period_name(board, day)})"
    if rank is None:
        return f"not on {where} yet"
    return f"{ordinal(rank)} of {of:,} on {where}, with {score_text(program, board, score)}"


@dataclass(frozen=True, slots=True)
class Standing:
    """One member's score on a board, with what orders ties."""

    member_id: str
    score: int
    reached_at: datetime


def ranked(standings: Iterable[Standing]) -> list[Standing]:
    """Standings in ranking order (see the module docstring); the reference for the SQL order."""
    return sorted(standings, key=lambda s: (-s.score, s.reached_at, s.member_id))
