"""Badges, tasks and the counters behind them, inside the caller's transaction.

Ingestion opens a `GrowthBatch` for its members (one query per table and batch, none when the
program has neither badges nor tasks), feeds it every event in time order, and saves it once.
The decisions are the domain's (`domain/badges.py`, `domain/tasks.py`, `domain/counters.py`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, func, select

from kinloop.domain import badges as B
from kinloop.domain import tasks as T
from kinloop.domain.counters import CounterNeeds, Tallies, Tally, count, member_context, period_keys
from kinloop.domain.events import Event
from kinloop.domain.periods import local_day
from kinloop.domain.program import Program, Reward
from kinloop.domain.rules import Activity, Award, AwardKind, Evaluation, MemberState, cel_context
from kinloop.services.book import Book, chunks
from kinloop.services.members import json_amount, load_activity
from kinloop.services.programs import LoadedProgram
from kinloop.store.bulk import Part, insert_rows, part_in, read_parts, select_in, upsert_rows
from kinloop.store.tables import member_badges, member_counters, members, task_progress


@dataclass(slots=True)
class EventGrowth:
    """What one event earned beyond its rules: badge levels, completed tasks, their rewards."""

    badges: list[list[str]] = field(default_factory=list)  # [badge, level]
    tasks: list[list[str]] = field(default_factory=list)  # [task, period]
    awards: list[list[Any]] = field(default_factory=list)  # as rule awards: rule, currency, amount, kind, pending
    rewards: list[Award] = field(default_factory=list)  # the same, for what counts awards (leaderboards)


@dataclass(slots=True)
class GrowthBatch:
    """The badge, task and counter state of one batch's members, saved in bulk by `save`."""

    program: Program
    tallies: dict[int, Tallies]
    held: dict[int, dict[str, set[str]]]
    progress: dict[int, dict[tuple[str, str], T.Progress]]
    by_type: dict[str, tuple[tuple[B.Badge, ...], CounterNeeds]] = field(default_factory=dict)
    tasks_by_type: dict[str, list[T.Task]] = field(default_factory=dict)
    changed_tallies: set[tuple[int, str, str]] = field(default_factory=set)
    changed_progress: dict[tuple[int, str, str], datetime | None] = field(default_factory=dict)
    badge_rows: list[dict[str, Any]] = field(default_factory=list)

    def on_event(
        self, book: Book, pk: int, state: MemberState, evaluation: Evaluation, ev_pk: int
    ) -> EventGrowth | None:
        """Count an evaluated event (already applied to `state`); award badges and tasks it earns."""
        program = self.program
        ev = evaluation.event
        out = EventGrowth()
        if program.counters is not None:
            tallies = self.tallies.setdefault(pk, {})
            for event_type, key in count(program.counters, tallies, ev, evaluation.day):
                self.changed_tallies.add((pk, event_type, key))
            concerned, needs = self.by_type[ev.type]
            held = self.held.setdefault(pk, {})
            # Badges the member holds every level of are not evaluated again.
            open_ = [b for b in concerned if len(held.get(b.key, ())) < len(b.levels)]
            if open_:
                member = member_context(needs, tallies, state.activity, evaluation.day)
                for badge, level in B.earn(open_, held, member, ev.type):
                    held.setdefault(badge.key, set()).add(level.key)
                    self.badge_rows.append(
                        {
                            "member_pk": pk,
                            "badge": badge.key,
                            "level": level.key,
                            "awarded_at": ev.occurred_at,
                            "event_pk": ev_pk,
                        }
                    )
                    out.badges.append([badge.key, level.key])
                    self._reward(book, pk, ev, ev_pk, badge.key, level.reward, "badge", out)
        for task in self.tasks_by_type.get(ev.type, ()):
            self._task(book, pk, state, evaluation, ev_pk, task, out)
        return out if out.badges or out.tasks else None

    def _task(
        self,
        book: Book,
        pk: int,
        state: MemberState,
        evaluation: Evaluation,
        ev_pk: int,
        task: T.Task,
        out: EventGrowth,
    ) -> None:
        ev = evaluation.event
        if task.condition is not None:
            ctx = cel_context(self.program, state, ev, evaluation.activity, task.condition.uses_member)
            if not T.matches(task, ctx):
                return
        period = task.period(evaluation.day)
        progress = self.progress.setdefault(pk, {}).setdefault((task.key, period), T.Progress())
        if progress.completed:
            return
        done = T.advance(task, progress)
        self.changed_progress[(pk, task.key, period)] = ev.occurred_at if done else None
        if done:
            out.tasks.append([task.key, period])
            self._reward(book, pk, ev, ev_pk, task.key, task.reward, "task", out)

    def _reward(
        self,
        book: Book,
        pk: int,
        ev: Event,
        ev_pk: int,
        key: str,
        reward: Reward | None,
        kind: AwardKind,
        out: EventGrowth,
    ) -> None:
        if reward is None:
            return
        currency = self.program.currencies[reward.currency]
        book.earn(
            pk,
            currency,
            reward.amount,
            earned_at=ev.occurred_at,
            tz=self.program.timezone,
            event_pk=ev_pk,
            rule=key,
            award_kind=kind,
        )
        out.awards.append([key, reward.currency, reward.amount, kind, False])
        out.rewards.append(Award(key, reward.currency, reward.amount, kind))

    def save(self, conn: Connection) -> None:
        """Write what the batch changed: tallies, new badge levels, task progress."""
        rows = []
        for pk, event_type, key in sorted(self.changed_tallies):
            tally = self.tallies[pk][(event_type, key)]
            totals = json.dumps({a: str(v) for a, v in sorted(tally.totals.items())}) if tally.totals else None
            rows.append(
                {"member_pk": pk, "period": key, "event_type": event_type, "count": tally.count, "totals": totals}
            )
        upsert_rows(conn, member_counters, rows, ("member_pk", "period", "event_type"))
        insert_rows(conn, member_badges, self.badge_rows)
        upsert_rows(
            conn,
            task_progress,
            [
                {
                    "member_pk": pk,
                    "period": period,
                    "task": task,
                    "count": self.progress[pk][(task, period)].count,
                    "completed_at": at,
                }
                for (pk, task, period), at in sorted(self.changed_progress.items())
            ],
            ("member_pk", "period", "task"),
        )


def start(conn: Connection, program: Program, pks: Iterable[int], days: Iterable[date]) -> GrowthBatch | None:
    """The badge, task and counter state of these members for events on these local days;
    None (and no query) when the program has neither badges nor tasks."""
    if not program.badges and not program.tasks:
        return None
    members_ = sorted(set(pks))
    days = sorted(set(days))
    found: tuple[list[tuple[Any, ...]], ...] = ([], [], [])
    for part in chunks(members_):
        for got, more in zip(found, read_parts(conn, start_parts(conn, program, part, days)), strict=True):
            got += more
    return start_from(program, *found)


def start_parts(conn: Connection, program: Program, pks: list[int], days: Iterable[date]) -> list[Part | None]:
    """The reads of `start` (at most `CHUNK` members): counters, badges held, task progress;
    their rows go to `start_from`."""
    if not program.badges and not program.tasks:
        return [None, None, None]
    days = sorted(set(days))
    counters = held = progress = None
    needs = program.counters
    if needs is not None:
        wanted = sorted({key for t in needs.stored() for d in days for _, key in period_keys(needs, t, d)})
        columns = ("member_pk", "period", "event_type", "count", "totals")
        counters = part_in(conn, member_counters, columns, "member_pk", pks, also=("period", wanted))
        held = part_in(conn, member_badges, ("member_pk", "badge", "level"), "member_pk", pks)
    if program.tasks:
        periods = sorted({t.period(d) for t in program.tasks if t.event_type for d in days})
        # completed_at: only tested for NULL
        columns = ("member_pk", "task", "period", "count", "completed_at")
        progress = part_in(conn, task_progress, columns, "member_pk", pks, also=("period", periods))
    return [counters, held, progress]


def start_from(
    program: Program,
    counter_rows: Iterable[tuple[Any, ...]],
    badge_rows: Iterable[tuple[Any, ...]],
    progress_rows: Iterable[tuple[Any, ...]],
) -> GrowthBatch | None:
    """`start` from the rows of `start_parts`."""
    if not program.badges and not program.tasks:
        return None
    batch = GrowthBatch(program, {}, {}, {})
    batch.by_type = B.by_event_type(program.badges, list(program.event_types))
    for task in program.tasks:
        if task.event_type is not None:
            batch.tasks_by_type.setdefault(task.event_type, []).append(task)
    for pk, key, event_type, n, totals in counter_rows:
        batch.tallies.setdefault(pk, {})[(event_type, key)] = _tally(n, totals)
    for pk, badge, level in badge_rows:
        batch.held.setdefault(pk, {}).setdefault(badge, set()).add(level)
    for pk, task, key, n, completed_at in progress_rows:
        batch.progress.setdefault(pk, {})[(task, key)] = T.Progress(n, completed_at is not None)
    return batch


def _tally(n: int, totals: str | None) -> Tally:
    return Tally(n, {a: Decimal(v) for a, v in json.loads(totals).items()} if totals else {})


def outcome_text(program: Program, outcome: Mapping[str, Any]) -> dict[str, Any]:
    """The badges and tasks of a stored event outcome, in the program's words."""
    out: dict[str, Any] = {}
    by_badge = {b.key: b for b in program.badges}
    by_task = {t.key: t for t in program.tasks}
    if outcome.get("badges"):
        out["badges"] = [
            {
                "badge": key,
                "level": level or None,
                "text": f"earned {by_badge[key].title(level) if key in by_badge else key}",
            }
            for key, level in outcome["badges"]
        ]
    if outcome.get("tasks"):
        out["tasks"] = [
            {"task": key, "period": period, "text": f"completed {by_task[key].name if key in by_task else key}"}
            for key, period in outcome["tasks"]
        ]
    return out


# --- profile tasks --------------------------------------------------------------------------
def profile_updated(
    conn: Connection, loaded: LoadedProgram, member_pk: int, profile: Mapping[str, Any], *, now: datetime
) -> list[str]:
    """Complete the profile tasks this profile now satisfies (once each, rewarded at `now`);
    returns their keys. The caller holds the member's lock."""
    program = loaded.program
    todo = [t for t in program.tasks if t.fields and T.profile_progress(t, profile) == len(t.fields)]
    if not todo:
        return []
    done = {
        key
        for (key,) in conn.execute(
            select(task_progress.c.task).where(
                task_progress.c.member_pk == member_pk,
                task_progress.c.period == "all",
                task_progress.c.task.in_([t.key for t in todo]),
                task_progress.c.completed_at.is_not(None),
            )
        )
    }
    todo = [t for t in todo if t.key not in done]
    if not todo:
        return []
    book = Book(conn, loaded.program_id, loaded.version_id, now)
    for task in todo:
        if task.reward is not None:
            book.earn(
                member_pk,
                program.currencies[task.reward.currency],
                task.reward.amount,
                earned_at=now,
                tz=program.timezone,
                rule=task.key,
                award_kind="task",
                reason=f"task {task.name}",
            )
    book.flush()
    upsert_rows(
        conn,
        task_progress,
        [
            {"member_pk": member_pk, "period": "all", "task": t.key, "count": len(t.fields), "completed_at": now}
            for t in todo
        ],
        ("member_pk", "period", "task"),
    )
    return [t.key for t in todo]


# --- the member's view ----------------------------------------------------------------------
def _reward_json(program: Program, reward: Reward | None) -> dict[str, Any] | None:
    if reward is None:
        return None
    currency = program.currencies[reward.currency]
    return {
        "currency": reward.currency,
        "amount": json_amount(reward.amount, currency.decimals),
        "text": currency.display(reward.amount),
    }


def showcase(conn: Connection, program: Program, member_pk: int, *, now: datetime) -> list[dict[str, Any]]:
    """Every badge of the program with the levels the member holds (and when), and the next
    level's progress where its criterion is a simple threshold."""
    if not program.badges or program.counters is None:
        return []
    held = conn.execute(
        select(member_badges.c.badge, member_badges.c.level, member_badges.c.awarded_at).where(
            member_badges.c.member_pk == member_pk
        )
    ).all()
    counters = select_in(
        conn,
        member_counters,
        ("period", "event_type", "count", "totals"),
        "member_pk",
        [member_pk],
        also=("period", showcase_periods(program, now)),
    )
    return showcase_of(program, now, held, counters, load_activity(conn, member_pk))


def showcase_periods(program: Program, now: datetime) -> list[str]:
    """The counter periods `showcase` reads."""
    needs = program.counters
    if needs is None:
        return []
    day = local_day(now, program.timezone)
    return sorted({key for t in needs.stored() for _, key in period_keys(needs, t, day)})


def showcase_of(
    program: Program,
    now: datetime,
    held_rows: Iterable[Sequence[Any]],
    counter_rows: Iterable[Sequence[Any]],
    activity: Mapping[str, Activity],
) -> list[dict[str, Any]]:
    """`showcase` from what it reads: (badge, level, awarded_at) rows, (period, event_type,
    count, totals) rows in `showcase_periods`, and the member's activity."""
    if not program.badges or program.counters is None:
        return []
    day = local_day(now, program.timezone)
    held: dict[str, dict[str, datetime]] = {}
    for badge, level, at in held_rows:
        held.setdefault(badge, {})[level] = at
    tallies: Tallies = {(event_type, key): _tally(n, totals) for key, event_type, n, totals in counter_rows}
    member = member_context(program.counters, tallies, activity, day)
    return [_showcase_json(program, B.showcase(b, held.get(b.key, {}), member)) for b in program.badges]


def _showcase_json(program: Program, s: B.Showcase) -> dict[str, Any]:
    badge = s.badge
    nxt: dict[str, Any] | None = None
    if s.next is not None:
        nxt = {
            "level": s.next.key or None,
            "name": badge.title(s.next.key),
            "reward": _reward_json(program, s.next.reward),
        }
        if s.next.threshold is not None and s.current is not None:
            target = s.next.threshold.target
            nxt.update(
                {
                    "current": _plain(s.current),
                    "target": _plain(target),
                    "text": f"{_plain(min(s.current, target))}/{_plain(target)} to {badge.title(s.next.key)}",
                }
            )
    return {
        "key": badge.key,
        "name": badge.name,
        "description": badge.description,
        "earned": [
            {"level": lv.key or None, "name": badge.title(lv.key), "awarded_at": at.isoformat()} for lv, at in s.earned
        ],
        "next": nxt,
    }


def _plain(value: Decimal) -> int | str:
    return int(value) if value == value.to_integral_value() else str(value.normalize())


def task_board(
    conn: Connection, program: Program, member_pk: int, profile: Mapping[str, Any], *, now: datetime
) -> list[dict[str, Any]]:
    """Every task with the member's progress in the current period, in words."""
    if not program.tasks:
        return []
    # `completed_at` is only tested for NULL here, so its raw driver value will do.
    rows = select_in(
        conn,
        task_progress,
        ("task", "period", "count", "completed_at"),
        "member_pk",
        [member_pk],
        also=("period", task_periods(program, now)),
    )
    return task_board_of(program, profile, now, rows)


def task_periods(program: Program, now: datetime) -> list[str]:
    """The task periods `task_board` reads: each task's current one."""
    day = local_day(now, program.timezone)
    return sorted({t.period(day) for t in program.tasks})


def task_board_of(
    program: Program, profile: Mapping[str, Any], now: datetime, rows: Iterable[Sequence[Any]]
) -> list[dict[str, Any]]:
    """`task_board` from the member's (task, period, count, completed_at) rows in `task_periods`."""
    if not program.tasks:
        return []
    day = local_day(now, program.timezone)
    periods = {t.key: t.period(day) for t in program.tasks}
    found: dict[tuple[str, str], tuple[int, bool]] = {}
    for task, key, n, completed_at in rows:
        found[(task, key)] = (n, completed_at is not None)
    out = []
    for task in program.tasks:
        n, done = found.get((task.key, periods[task.key]), (0, False))
        if task.fields and not done:
            n = T.profile_progress(task, profile)
        out.append(
            {
                "key": task.key,
                "name": task.name,
                "every": "once" if task.every == "lifetime" else task.every,
                "period": periods[task.key],
                "progress": min(n, T.target(task)),
                "target": T.target(task),
                "done": done,
                "text": T.progress_text(task, n) + (" (done)" if done else ""),
                "reward": _reward_json(program, task.reward),
            }
        )
    return out


# --- for the operator -----------------------------------------------------------------------
def task_stats(conn: Connection, loaded: LoadedProgram, *, task: str | None = None) -> list[dict[str, Any]]:
    """Completions per task and period (newest period first within a task)."""
    names = {t.key: t.name for t in loaded.program.tasks}
    query = (
        select(task_progress.c.task, task_progress.c.period, func.count())
        .select_from(task_progress.join(members, members.c.id == task_progress.c.member_pk))
        .where(members.c.program_id == loaded.program_id, task_progress.c.completed_at.is_not(None))
        .group_by(task_progress.c.task, task_progress.c.period)
    )
    if task is not None:
        query = query.where(task_progress.c.task == task)
    newest_first = sorted(conn.execute(query).all(), key=lambda r: str(r[1]), reverse=True)
    rows = sorted(newest_first, key=lambda r: str(r[0]))  # stable: periods stay newest first
    return [
        {"task": key, "name": names.get(key, key), "period": period, "completions": int(n)} for key, period, n in rows
    ]


def events_days(program: Program, evs: Iterable[Event]) -> set[date]:
    """The local days of these events, where the program lives."""
    return {local_day(e.occurred_at, program.timezone) for e in evs}
