"""Badges: medals for criteria over a member's counters, one-time or with levels in order."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import cel

from kinloop.domain.counters import CounterNeeds
from kinloop.domain.program import Condition, Reward

NO_NEEDS = CounterNeeds()
# A criterion of the form `member.<counter> >= N` is a simple threshold: its progress can be shown.
_THRESHOLD = re.compile(
    r"^\s*member\.((?:counters\.[a-z][a-z0-9_]*\.(?:day|week|month|lifetime))"
    r"|(?:totals\.[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*\.(?:day|week|month|lifetime))"
    r"|(?:streaks\.[a-z][a-z0-9_]*))\s*>=\s*(\d+(?:\.\d+)?)\s*$"
)


@dataclass(frozen=True, slots=True)
class Threshold:
    """A criterion that is one counter reaching a target: `counter` is its path under `member`."""

    counter: str
    target: Decimal
    path: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", tuple(self.counter.split(".")))

    @classmethod
    def of(cls, source: str) -> Threshold | None:
        """The threshold a criterion states, or None when it says something else."""
        m = _THRESHOLD.match(source)
        return cls(m.group(1), Decimal(m.group(2))) if m else None

    def current(self, member: Mapping[str, Any]) -> Decimal:
        """The counter's value in a member context (as `counters.member_context` builds it)."""
        value: Any = member
        for part in self.path:
            value = value.get(part, 0) if isinstance(value, Mapping) else 0
        if isinstance(value, bool):
            return Decimal(int(value))
        return Decimal(str(value))


@dataclass(frozen=True, slots=True)
class BadgeLevel:
    key: str  # "" for a one-time badge
    name: str
    criterion: Condition
    threshold: Threshold | None = None
    reward: Reward | None = None


@dataclass(frozen=True, slots=True)
class Badge:
    key: str
    name: str
    description: str
    levels: tuple[BadgeLevel, ...]
    event_types: frozenset[str]  # events that can change the criteria; empty: every event
    needs: CounterNeeds = NO_NEEDS  # the counters its criteria read

    def title(self, level: str) -> str:
        """The badge in words: `Helpful (Silver)`, or `Helpful` for a one-time badge."""
        found = next((lv for lv in self.levels if lv.key == level), None)
        return f"{self.name} ({found.name})" if found is not None and found.key else self.name

    def concerns(self, event_type: str) -> bool:
        return not self.event_types or event_type in self.event_types


def by_event_type(
    badges: Sequence[Badge], event_types: Sequence[str]
) -> dict[str, tuple[tuple[Badge, ...], CounterNeeds]]:
    """Per event type, the badges its events concern and the counters their criteria read."""
    out: dict[str, tuple[tuple[Badge, ...], CounterNeeds]] = {}
    for t in event_types:
        concerned = tuple(b for b in badges if b.concerns(t))
        needs = NO_NEEDS
        for b in concerned:
            needs = needs | b.needs
        out[t] = (concerned, needs)
    return out


def satisfied(level: BadgeLevel, context: Any) -> bool:
    """Whether a level's criterion holds for `context` (holding `member`); one that cannot be
    evaluated does not."""
    try:
        return level.criterion.compiled.execute(context) is True
    except Exception:  # CEL raises KeyError, TypeError, RuntimeError, ZeroDivisionError
        return False


def earn(
    badges: Sequence[Badge], held: Mapping[str, set[str]], member: Mapping[str, Any], event_type: str
) -> list[tuple[Badge, BadgeLevel]]:
    """The badge levels a member earns now: for each badge this event concerns, its levels in
    order from the first one not held, while their criteria hold over `member` (the counters)."""
    out: list[tuple[Badge, BadgeLevel]] = []
    context: Any = None
    for badge in badges:
        if not badge.concerns(event_type):
            continue
        mine = held.get(badge.key, set())
        if len(mine) >= len(badge.levels):
            continue
        for level in badge.levels:
            if level.key in mine:
                continue
            if level.threshold is not None:
                # The same comparison as the CEL source states, without converting the counters.
                ok = level.threshold.current(member) >= level.threshold.target
            else:
                if context is None:
                    context = cel.Context({"member": member})
                ok = satisfied(level, context)
            if not ok:
                break
            out.append((badge, level))
    return out


@dataclass(frozen=True, slots=True)
class Showcase:
    """One badge as a member sees it: the levels held (with when) and the next one's progress."""

    badge: Badge
    earned: tuple[tuple[BadgeLevel, Any], ...]
    next: BadgeLevel | None
    current: Decimal | None  # the next level's counter, when it is a simple threshold


def showcase(badge: Badge, held: Mapping[str, Any], member: Mapping[str, Any]) -> Showcase:
    """A badge in a member's showcase; `held` maps level keys to when they were earned."""
    earned = tuple((lv, held[lv.key]) for lv in badge.levels if lv.key in held)
    nxt = next((lv for lv in badge.levels if lv.key not in held), None)
    current = nxt.threshold.current(member) if nxt is not None and nxt.threshold is not None else None
    return Showcase(badge, earned, nxt, current)
