"""Tasks: onboarding one-offs (a profile filled in, a first event) and repeating daily, weekly
or monthly targets ("comment 3 times today"), each with a reward on completion."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Any

from kinloop.domain.periods import period_key
from kinloop.domain.program import Condition, Period, Reward

_EVERY_WORDS = {"day": "today", "week": "this week", "month": "this month", "lifetime": ""}


@dataclass(frozen=True, slots=True)
class Task:
    """Either `event` (count events of a type, optionally matching `condition`, up to `target`
    within each `every` period; `lifetime`: once) or `fields` (profile fields all set, once)."""

    key: str
    name: str
    every: Period = "lifetime"
    event_type: str | None = None
    target: int = 1
    condition: Condition | None = None
    fields: tuple[str, ...] = ()
    reward: Reward | None = None

    def period(self, day: date) -> str:
        """The key of the period of `day` in which this task is done at most once."""
        return period_key(self.every, day)

    @property
    def repeats(self) -> bool:
        return self.every != "lifetime"


@dataclass(slots=True)
class Progress:
    """A member's progress on a task in one period."""

    count: int = 0
    completed: bool = False


def advance(task: Task, progress: Progress) -> bool:
    """Count one matching event; True when this one completes the task (only ever once)."""
    if progress.completed:
        return False
    progress.count += 1
    if progress.count >= task.target:
        progress.completed = True
        return True
    return False


def matches(task: Task, context: Any) -> bool:
    """Whether an event counts for the task: its condition holds (one that fails to run does not)."""
    if task.condition is None:
        return True
    try:
        return task.condition.compiled.execute(context) is True
    except Exception:  # CEL raises KeyError, TypeError, RuntimeError, ZeroDivisionError
        return False


def profile_progress(task: Task, profile: Mapping[str, Any]) -> int:
    """How many of the task's profile fields are set (present and not empty)."""
    return sum(1 for f in task.fields if profile.get(f) not in (None, ""))


def target(task: Task) -> int:
    return len(task.fields) if task.fields else task.target


def progress_text(task: Task, count: int) -> str:
    """Progress in words: `Comment 3 times today: 1/3`."""
    return f"{task.name}: {min(count, target(task))}/{target(task)}"


def every_words(task: Task) -> str:
    """When the task comes back, in words ("today", "this week"), or "" for a one-off."""
    return _EVERY_WORDS[task.every]
