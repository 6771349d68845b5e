"""Member counters that badge criteria read: counts per event type and period, totals of an
attribute, streaks and firsts.

Counts over the member's whole life and streaks are the `Activity` the rule engine already
keeps; only the period counts and the totals some badge reads are kept here, found once, when
the program is compiled, by reading the criteria (`CounterNeeds.scan`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from kinloop.domain.events import Event
from kinloop.domain.periods import period_key
from kinloop.domain.program import PERIODS, Period
from kinloop.domain.rules import Activity

_NAME = r"([a-z][a-z0-9_]*)"
_PERIOD = r"(day|week|month|lifetime)"
COUNT_REF = re.compile(rf"\bmember\.counters\.{_NAME}\.{_PERIOD}\b")
TOTAL_REF = re.compile(rf"\bmember\.totals\.{_NAME}\.{_NAME}\.{_PERIOD}\b")
STREAK_REF = re.compile(rf"\bmember\.streaks\.{_NAME}\b")
FIRST_REF = re.compile(rf"\bmember\.firsts\.{_NAME}\b")
SPELLING = (
    "member.counters.<type>.<day|week|month|lifetime>, member.totals.<type>.<attribute>.<period>, "
    "member.streaks.<type> or member.firsts.<type>"
)


@dataclass(frozen=True, slots=True)
class CounterNeeds:
    """The counters some criterion reads; anything else is neither kept nor shown to CEL."""

    counts: frozenset[tuple[str, Period]] = frozenset()
    totals: frozenset[tuple[str, str, Period]] = frozenset()
    streaks: frozenset[str] = frozenset()
    firsts: frozenset[str] = frozenset()

    _stored: dict[str, tuple[Period, ...]] = field(init=False, repr=False, compare=False)
    _totalled: dict[str, tuple[str, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Computed once: ingestion asks for these for every event.
        stored: dict[str, set[Period]] = {}
        for t, p in self.counts:
            if p != "lifetime":
                stored.setdefault(t, set()).add(p)
        for t, _, p in self.totals:
            stored.setdefault(t, set()).add(p)
        object.__setattr__(self, "_stored", {t: tuple(p for p in PERIODS if p in ps) for t, ps in stored.items()})
        totalled: dict[str, set[str]] = {}
        for t, a, _ in self.totals:
            totalled.setdefault(t, set()).add(a)
        object.__setattr__(self, "_totalled", {t: tuple(sorted(a)) for t, a in totalled.items()})

    @classmethod
    def scan(cls, sources: Iterable[str]) -> CounterNeeds:
        """The counters named in these CEL sources."""
        counts: set[tuple[str, Period]] = set()
        totals: set[tuple[str, str, Period]] = set()
        streaks: set[str] = set()
        firsts: set[str] = set()
        for src in sources:
            counts.update((t, p) for t, p in COUNT_REF.findall(src))
            totals.update((t, a, p) for t, a, p in TOTAL_REF.findall(src))
            streaks.update(STREAK_REF.findall(src))
            firsts.update(FIRST_REF.findall(src))
        return cls(frozenset(counts), frozenset(totals), frozenset(streaks), frozenset(firsts))

    def __or__(self, other: CounterNeeds) -> CounterNeeds:
        return CounterNeeds(
            self.counts | other.counts,
            self.totals | other.totals,
            self.streaks | other.streaks,
            self.firsts | other.firsts,
        )

    @property
    def event_types(self) -> frozenset[str]:
        """The event types whose events can change what these counters say."""
        return frozenset({t for t, _ in self.counts} | {t for t, _, _ in self.totals} | self.streaks | self.firsts)

    def stored(self) -> dict[str, tuple[Period, ...]]:
        """Per event type, the periods kept in storage (lifetime counts live in `Activity`)."""
        return self._stored

    def totalled(self, event_type: str) -> tuple[str, ...]:
        """The attributes of `event_type` some criterion sums."""
        return self._totalled.get(event_type, ())


@dataclass(slots=True)
class Tally:
    """Events of one type in one period: how many, and the sums of the totalled attributes."""

    count: int = 0
    totals: dict[str, Decimal] = field(default_factory=dict)


Tallies = dict[tuple[str, str], Tally]
"""A member's tallies by (event type, period key)."""


def period_keys(needs: CounterNeeds, event_type: str, day: date) -> list[tuple[Period, str]]:
    """The stored periods of `event_type` that contain `day`, with their keys."""
    return [(p, period_key(p, day)) for p in needs.stored().get(event_type, ())]


def count(needs: CounterNeeds, tallies: Tallies, event: Event, day: date) -> list[tuple[str, str]]:
    """Count `event` (on its local `day`) in the stored tallies; returns the keys it changed."""
    periods = needs.stored().get(event.type)
    if not periods:
        return []
    changed = []
    attrs = needs.totalled(event.type)
    for key in [period_key(p, day) for p in periods]:
        tally = tallies.setdefault((event.type, key), Tally())
        tally.count += 1
        for a in attrs:
            value = event.attributes.get(a)
            if value is not None:
                tally.totals[a] = tally.totals.get(a, Decimal(0)) + Decimal(value)
        changed.append((event.type, key))
    return changed


def streak_now(activity: Activity | None, day: date) -> int:
    """The day streak as it stands on `day`: broken once a whole day has passed without activity."""
    if activity is None or activity.last_day is None:
        return 0
    return activity.streak if activity.last_day >= day - timedelta(days=1) else 0


def member_context(
    needs: CounterNeeds, tallies: Mapping[tuple[str, str], Tally], activity: Mapping[str, Activity], day: date
) -> dict[str, Any]:
    """What a criterion sees as `member`: exactly the counters it names, as they stand on `day`."""
    keys = {p: period_key(p, day) for p in PERIODS}
    counters: dict[str, dict[str, int]] = {}
    for t, p in needs.counts:
        if p == "lifetime":
            a = activity.get(t)
            n = a.count if a is not None else 0
        else:
            tally = tallies.get((t, keys[p]))
            n = tally.count if tally is not None else 0
        counters.setdefault(t, {})[p] = n
    totals: dict[str, dict[str, dict[str, float]]] = {}
    for t, attr, p in needs.totals:
        tally = tallies.get((t, keys[p]))
        value = tally.totals.get(attr, Decimal(0)) if tally is not None else Decimal(0)
        # CEL has no decimal type: criteria compare totals as doubles, like rule conditions.
        totals.setdefault(t, {}).setdefault(attr, {})[p] = float(value)
    return {
        "counters": counters,
        "totals": totals,
        "streaks": {t: streak_now(activity.get(t), day) for t in needs.streaks},
        "firsts": {t: (a := activity.get(t)) is not None and a.count > 0 for t in needs.firsts},
    }


def sample_context(needs: CounterNeeds) -> dict[str, Any]:
    """A `member` with every needed counter at 1, to check criteria when a program is loaded."""
    counters: dict[str, dict[str, int]] = {}
    for t, p in needs.counts:
        counters.setdefault(t, {})[p] = 1
    totals: dict[str, dict[str, dict[str, float]]] = {}
    for t, attr, p in needs.totals:
        totals.setdefault(t, {}).setdefault(attr, {})[p] = 1.0
    return {
        "counters": counters,
        "totals": totals,
        "streaks": dict.fromkeys(needs.streaks, 1),
        "firsts": dict.fromkeys(needs.firsts, True),
    }
