"""Tasks through ingestion and the profile, on SQLite and PostgreSQL: progress per period,
a reward once per period in the event's transaction, completion counts for the operator."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import Engine, func, select
from typer.testing import CliRunner

from kinloop.cli.app import app
from kinloop.services import growth_badges, ingest, member_view, members
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import entries
from tests.badges.programs import event, load
from tests.conftest import NOW


@pytest.fixture
def forum(engine: Engine) -> LoadedProgram:
    return load(engine)


def feed(engine: Engine, loaded: LoadedProgram, raws: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with engine.begin() as conn:
        return [r.as_json(loaded.program) for r in ingest.ingest(conn, loaded, raws, now=NOW)]


def board(engine: Engine, loaded: LoadedProgram, now: datetime) -> dict[str, str]:
    with engine.connect() as conn:
        return {t["key"]: t["text"] for t in member_view.show(conn, loaded, "m1", now=now).tasks}


def task_rewards(engine: Engine, task: str) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(entries.c.award_kind == "task", entries.c.rule == task)
            ).scalar_one()
        )


def comment(i: int, at: str, **attributes: Any) -> dict[str, Any]:
    return event(f"c{i}", "comment", at, **attributes)


def test_a_daily_task_is_rewarded_once_a_day_and_starts_again_at_local_midnight(
    engine: Engine, forum: LoadedProgram
) -> None:
    # 23:30 on the 10th in Shanghai is 15:30 UTC; 00:10 on the 11th is 16:10 UTC the same UTC day.
    shown_on_10th = datetime.fromisoformat("2026-02-10T23:50:00+08:00")
    feed(engine, forum, [comment(0, "2026-02-10T20:00:00+08:00")])
    assert board(engine, forum, shown_on_10th)["daily_comments"] == "Comment 3 times today: 1/3"
    results = feed(
        engine,
        forum,
        [comment(i, f"2026-02-10T23:{i}0:00+08:00") for i in range(1, 5)] + [comment(9, "2026-02-11T00:10:00+08:00")],
    )
    assert [r.get("tasks", []) for r in results] == [
        [],
        [{"task": "daily_comments", "period": "d2026-02-10", "text": "completed Comment 3 times today"}],
        [],
        [],
        [],
    ]
    # The third comment earns the Chatty badge (7 C) and completes the task (5 C).
    assert [a["text"] for a in results[1]["awards"]] == ["7 C", "5 C"]
    assert task_rewards(engine, "daily_comments") == 1
    assert board(engine, forum, shown_on_10th)["daily_comments"] == "Comment 3 times today: 3/3 (done)"
    shown_on_11th = datetime.fromisoformat("2026-02-11T00:20:00+08:00")
    assert board(engine, forum, shown_on_11th)["daily_comments"] == "Comment 3 times today: 1/3"
    # The 11th completes on its own: a second reward, in the second period.
    feed(engine, forum, [comment(10, "2026-02-11T08:00:00+08:00"), comment(11, "2026-02-11T09:00:00+08:00")])
    assert task_rewards(engine, "daily_comments") == 2


def test_a_condition_chooses_which_events_count(engine: Engine, forum: LoadedProgram) -> None:
    results = feed(
        engine,
        forum,
        [
            comment(0, "2026-02-09T10:00:00+08:00"),
            comment(1, "2026-02-09T11:00:00+08:00", long=False),
            comment(2, "2026-02-09T12:00:00+08:00", long=True),
            comment(3, "2026-02-10T12:00:00+08:00", long=True),  # same ISO week: already done
            comment(4, "2026-02-16T12:00:00+08:00", long=True),  # next week
        ],
    )
    done = [[t["period"] for t in r.get("tasks", []) if t["task"] == "long_comment"] for r in results]
    assert done == [[], [], ["w2026-07"], [], ["w2026-08"]]
    assert task_rewards(engine, "long_comment") == 2


def test_a_one_off_first_purchase_is_rewarded_once_ever(engine: Engine, forum: LoadedProgram) -> None:
    results = feed(
        engine,
        forum,
        [
            event("p0", "purchase", "2026-02-01T10:00:00Z", amount=5),  # under the condition's 10
            event("p1", "purchase", "2026-02-02T10:00:00Z", amount=12),
            event("p2", "purchase", "2026-03-02T10:00:00Z", amount=50),
        ],
    )
    assert [[t["task"] for t in r.get("tasks", [])] for r in results] == [[], ["first_purchase"], []]
    assert task_rewards(engine, "first_purchase") == 1
    # A repeat of the completing event is a duplicate: nothing more.
    assert feed(engine, forum, [event("p1", "purchase", "2026-02-02T10:00:00Z", amount=12)])[0]["status"] == "duplicate"
    assert task_rewards(engine, "first_purchase") == 1


def test_a_profile_task_is_rewarded_once_when_its_fields_are_set(engine: Engine, forum: LoadedProgram) -> None:
    def put(profile: dict[str, Any]) -> list[str]:
        with engine.begin() as conn:
            members.set_profile(conn, forum.program_id, "m1", profile, now=NOW)
            pk = members.get(conn, forum.program_id, "m1").pk
            return growth_badges.profile_updated(conn, forum, pk, profile, now=NOW)

    assert put({"display_name": "Ann"}) == []
    assert board(engine, forum, NOW)["complete_profile"] == "Complete your profile: 1/2"
    assert put({"display_name": "Ann", "phone": ""}) == []
    assert put({"display_name": "Ann", "phone": "+86 138 0000 0000"}) == ["complete_profile"]
    assert put({"display_name": "Ann B", "phone": "+86 138 0000 0000"}) == []
    assert board(engine, forum, NOW)["complete_profile"] == "Complete your profile: 2/2 (done)"
    assert task_rewards(engine, "complete_profile") == 1
    with engine.connect() as conn:
        assert member_view.show(conn, forum, "m1", now=NOW).balances["coins"] == 3


def test_completion_counts_per_task_and_period(engine: Engine, forum: LoadedProgram, db_url: str) -> None:
    day1 = [comment(i, f"2026-02-10T1{i}:00:00+08:00", member=f"m{i % 2}") for i in range(6)]
    day2 = [comment(10 + i, f"2026-02-11T1{i}:00:00+08:00") for i in range(3)]
    feed(engine, forum, day1 + day2)
    with engine.connect() as conn:
        stats = growth_badges.task_stats(conn, forum)
    assert [(s["task"], s["period"], s["completions"]) for s in stats] == [
        ("daily_comments", "d2026-02-11", 1),
        ("daily_comments", "d2026-02-10", 2),
    ]
    result = CliRunner().invoke(app, ["tasks", "stats", "--db", db_url, "--json", "--task", "daily_comments"])
    assert result.exit_code == 0, result.output
    assert '"completions": 2' in result.output
    result = CliRunner().invoke(app, ["tasks", "stats", "--db", db_url, "--task", "nope"])
    assert result.exit_code != 0
    assert "no task 'nope'" in result.output


def test_member_show_lists_badges_and_tasks_in_words(engine: Engine, forum: LoadedProgram, db_url: str) -> None:
    feed(engine, forum, [event(f"a{i}", "answer", f"2026-02-0{i + 1}T10:00:00+08:00") for i in range(2)])
    result = CliRunner().invoke(app, ["member", "show", "m1", "--db", db_url])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "  badge Helpful (Bronze); 2/3 to Helpful (Silver)" in lines
    assert "  badge Chatty: not yet; 0/3 to Chatty" in lines
    assert "  task Complete your profile: 0/2" in lines
