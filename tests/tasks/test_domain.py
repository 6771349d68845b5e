"""Tasks in the pure core: progress, completion once per period, periods at local midnight."""

from __future__ import annotations

from datetime import date, datetime

from hypothesis import given
from hypothesis import strategies as st

from kinloop.domain import tasks as T
from kinloop.domain.periods import local_day
from tests.badges.programs import FORUM
from tests.domain.factories import program

PROGRAM = program(FORUM)
TASKS = {t.key: t for t in PROGRAM.tasks}


def test_a_task_completes_once_at_its_target() -> None:
    task = TASKS["daily_comments"]
    progress = T.Progress()
    assert [T.advance(task, progress) for _ in range(5)] == [False, False, True, False, False]
    assert progress == T.Progress(count=3, completed=True)


@given(st.integers(min_value=1, max_value=50), st.integers(min_value=0, max_value=200))
def test_completion_happens_exactly_once_whatever_the_count(target: int, events: int) -> None:
    task = T.Task("t", "T", every="day", event_type="comment", target=target)
    progress = T.Progress()
    completions = sum(T.advance(task, progress) for _ in range(events))
    assert completions == (1 if events >= target else 0)
    assert progress.count == min(events, target)


def test_progress_in_words() -> None:
    task = TASKS["daily_comments"]
    assert T.progress_text(task, 1) == "Comment 3 times today: 1/3"
    assert T.progress_text(task, 7) == "Comment 3 times today: 3/3"
    profile = TASKS["complete_profile"]
    assert T.profile_progress(profile, {"display_name": "Ann", "phone": ""}) == 1
    assert T.progress_text(profile, 1) == "Complete your profile: 1/2"
    assert T.every_words(task) == "today"
    assert T.every_words(profile) == ""


def test_periods_turn_at_local_midnight() -> None:
    tz = PROGRAM.timezone  # Asia/Shanghai
    daily, weekly, once = TASKS["daily_comments"], TASKS["long_comment"], TASKS["first_purchase"]
    before = datetime(2026, 2, 15, 23, 59, 59, tzinfo=tz)  # a Sunday
    after = datetime(2026, 2, 16, 0, 0, 0, tzinfo=tz)  # Monday: a new day and a new ISO week
    assert daily.period(local_day(before, tz)) == "d2026-02-15"
    assert daily.period(local_day(after, tz)) == "d2026-02-16"
    assert weekly.period(local_day(before, tz)) == "w2026-07"
    assert weekly.period(local_day(after, tz)) == "w2026-08"
    assert once.period(local_day(before, tz)) == once.period(local_day(after, tz)) == "all"
    assert not once.repeats
    assert daily.repeats
    assert daily.period(date(2026, 2, 28)) != T.Task("m", "M", every="month").period(date(2026, 2, 28))


def test_a_condition_that_fails_to_run_does_not_count() -> None:
    task = TASKS["long_comment"]
    assert T.matches(task, {"event": {"long": True}})
    assert not T.matches(task, {"event": {"long": False}})
    assert not T.matches(task, {"event": {}})
    assert T.matches(TASKS["daily_comments"], {"event": {}})  # no condition
