"""The example programs: each one validates and loads, and behaves as its comments promise."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine
from typer.testing import CliRunner

from kinloop.cli.app import app
from kinloop.program.loader import load_program, parse_program
from kinloop.services import explain, member_view, programs
from kinloop.services.ingest import ingest
from kinloop.services.programs import LoadedProgram
from tests.conftest import EXAMPLES, NOW, load_example

EXAMPLE_FILES = sorted(EXAMPLES.glob("*.yaml"))


def event(event_id: str, type_: str, at: str, member: str = "m1", **attributes: Any) -> dict[str, Any]:
    return {"event_id": event_id, "member_id": member, "type": type_, "occurred_at": at, "attributes": attributes}


def feed(engine: Engine, loaded: LoadedProgram, raws: list[dict[str, Any]], now: datetime = NOW) -> None:
    """Ingest events in one transaction; every one of them must be accepted."""
    with engine.begin() as conn:
        results = ingest(conn, loaded, raws, now=now)
    assert [(r.event_id, r.status) for r in results] == [(r["event_id"], "accepted") for r in raws]


def view(engine: Engine, loaded: LoadedProgram, member: str = "m1", now: datetime = NOW) -> member_view.MemberView:
    with engine.connect() as conn:
        return member_view.show(conn, loaded, member, now=now)


def statuses(engine: Engine, loaded: LoadedProgram, event_id: str) -> dict[str, str]:
    """The stored decision of every rule for one event, as `kinloop explain` reports it."""
    with engine.connect() as conn:
        return {r["rule"]: r["status"] for r in explain.explain(conn, loaded, event_id).rules}


def days(start: date, n: int) -> Iterator[date]:
    return (start + timedelta(days=i) for i in range(n))


# --- every example ---------------------------------------------------------------------------


def test_the_examples_this_file_tests_are_there() -> None:
    assert {"coffee", "ev_community", "content_community"} <= {p.stem for p in EXAMPLE_FILES}


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_validates(path: Path) -> None:
    program, text = load_program(path)
    assert text == path.read_text(encoding="utf-8")
    assert program.rules
    result = CliRunner().invoke(app, ["validate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok ")


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: p.stem)
def test_example_loads_into_the_database(engine: Engine, path: Path) -> None:
    loaded = load_example(engine, path.stem)
    assert loaded.version == 1
    source = path.read_text(encoding="utf-8")
    with engine.begin() as conn:
        assert programs.active(conn, loaded.program.key).version_id == loaded.version_id
        again = programs.load(conn, parse_program(source), source, now=NOW)
    assert (again.created_program, again.new_version) == (False, False)
    assert again.loaded.version_id == loaded.version_id


# --- coffee ----------------------------------------------------------------------------------


def test_coffee_purchase_of_120_earns_2_stars_and_12_beans(engine: Engine, coffee: LoadedProgram) -> None:
    feed(engine, coffee, [event("p1", "purchase", "2026-01-05T10:00:00Z", amount=120)])
    v = view(engine, coffee)
    assert v.balances == {"stars": 2, "beans": 12}
    assert v.tier == {"key": "green", "name": "Green"}
    assert v.next_tier is not None
    assert v.next_tier["text"] == "2 ★ to Jade"


def test_coffee_resending_an_event_awards_nothing_twice(engine: Engine, coffee: LoadedProgram) -> None:
    raw = event("p1", "purchase", "2026-01-05T10:00:00Z", amount=120)
    feed(engine, coffee, [raw])
    with engine.begin() as conn:
        [again] = ingest(conn, coffee, [raw], now=NOW)
    assert again.status == "duplicate"
    assert view(engine, coffee).balances == {"stars": 2, "beans": 12}


def test_coffee_a_second_check_in_on_the_same_day_earns_nothing(engine: Engine, coffee: LoadedProgram) -> None:
    # Europe/Paris: 22:30Z on 5 January is still the 5th there; 23:30Z is already the 6th.
    with engine.begin() as conn:
        first, second = ingest(
            conn,
            coffee,
            [event("c1", "check_in", "2026-01-05T08:00:00Z"), event("c2", "check_in", "2026-01-05T22:30:00Z")],
            now=NOW,
        )
    assert view(engine, coffee).balances == {"stars": 0, "beans": 1}
    assert first.as_json(coffee.program)["checkin"]["streak"] == 1
    assert second.as_json(coffee.program)["checkin"]["status"] == "already_checked_in"
    assert second.as_json(coffee.program)["awards"] == []
    with engine.begin() as conn:
        [third] = ingest(conn, coffee, [event("c3", "check_in", "2026-01-05T23:30:00Z")], now=NOW)
    assert third.as_json(coffee.program)["checkin"]["streak"] == 2
    assert view(engine, coffee).balances == {"stars": 0, "beans": 2}


def test_coffee_16_stars_reach_gold(engine: Engine, coffee: LoadedProgram) -> None:
    feed(engine, coffee, [event("p1", "purchase", "2026-01-05T10:00:00Z", amount=799)])
    v = view(engine, coffee)
    assert v.balances["stars"] == 15  # only whole blocks of 50 count
    assert v.tier == {"key": "jade", "name": "Jade"}
    assert v.next_tier is not None
    assert v.next_tier["text"] == "1 ★ to Gold"
    feed(engine, coffee, [event("p2", "purchase", "2026-01-06T10:00:00Z", amount=50)])
    v = view(engine, coffee)
    assert v.balances == {"stars": 16, "beans": 84}
    assert v.tier == {"key": "gold", "name": "Gold"}
    assert v.next_tier is None


# --- ev_community ----------------------------------------------------------------------------


@pytest.fixture
def ev(engine: Engine) -> LoadedProgram:
    return load_example(engine, "ev_community")


def sign_ins(first: date, n: int, prefix: str = "s") -> list[dict[str, Any]]:
    # 02:00Z is 10:00 in Asia/Shanghai, the program's zone.
    return [event(f"{prefix}{day.isoformat()}", "sign_in", f"{day.isoformat()}T02:00:00Z") for day in days(first, n)]


def ladder_points(n: int) -> int:
    """Points for n consecutive sign-ins on the EV ladder: 5 a day, 10 on every 7th day."""
    return 5 * n + 5 * (n // 7)


def test_ev_100_consecutive_sign_ins_earn_10_n_once(engine: Engine, ev: LoadedProgram) -> None:
    start = date(2025, 11, 1)
    feed(engine, ev, sign_ins(start, 99))
    assert view(engine, ev).balances == {"points": ladder_points(99), "value": 0}
    day_100 = start + timedelta(days=99)
    feed(engine, ev, sign_ins(day_100, 1))
    assert view(engine, ev).balances == {"points": ladder_points(100), "value": 10}
    with engine.connect() as conn:
        stored = explain.explain(conn, ev, f"s{day_100}")
    assert [(e["rule"], e["currency"], e["amount"]) for e in stored.entries] == [
        ("checkin", "points", 5),
        ("checkin", "value", 10),
    ]
    # Opening the app again on day 100 keeps the streak at 100 but earns nothing more.
    feed(engine, ev, [event("again", "sign_in", f"{day_100}T09:00:00Z")])
    assert view(engine, ev).balances == {"points": ladder_points(100), "value": 10}
    feed(engine, ev, sign_ins(day_100 + timedelta(days=1), 1))
    assert view(engine, ev).balances == {"points": ladder_points(101), "value": 10}


def test_ev_100_sign_ins_with_a_gap_earn_no_value(engine: Engine, ev: LoadedProgram) -> None:
    start = date(2025, 11, 1)
    feed(engine, ev, sign_ins(start, 50) + sign_ins(start + timedelta(days=51), 50))
    assert view(engine, ev).balances == {"points": 2 * ladder_points(50), "value": 0}


def test_ev_a_late_sign_in_for_an_earlier_day_does_not_repeat_the_milestone(engine: Engine, ev: LoadedProgram) -> None:
    start = date(2025, 11, 1)
    feed(engine, ev, sign_ins(start, 100))
    assert view(engine, ev).balances == {"points": ladder_points(100), "value": 10}
    # A second sign-in on day 99, delivered after day 100: the streak on day 99 was 99.
    day_99 = start + timedelta(days=98)
    feed(engine, ev, [event("late", "sign_in", f"{day_99}T05:00:00Z")])
    assert view(engine, ev).balances == {"points": ladder_points(100), "value": 10}


def test_ev_first_car_earns_1000_n_and_each_repurchase_500_n(engine: Engine, ev: LoadedProgram) -> None:
    feed(engine, ev, [event("car1", "car_purchase", "2026-01-10T03:00:00Z", order_id="o1")])
    v = view(engine, ev)
    assert v.balances == {"points": 0, "value": 1000}
    assert v.tier == {"key": "co_builder", "name": "Co-builder"}
    assert statuses(engine, ev, "car1") == {"new_car_owner": "awarded", "car_repurchase": "condition_false"}
    feed(engine, ev, [event("car2", "car_purchase", "2026-02-10T03:00:00Z")])
    assert view(engine, ev).balances["value"] == 1500
    assert statuses(engine, ev, "car2") == {"new_car_owner": "condition_false", "car_repurchase": "awarded"}
    feed(engine, ev, [event("car3", "car_purchase", "2026-02-20T03:00:00Z")])
    assert view(engine, ev).balances["value"] == 2000


def test_ev_referral_earns_100_n_per_car(engine: Engine, ev: LoadedProgram) -> None:
    feed(engine, ev, [event("r1", "referral_purchase", "2026-01-10T03:00:00Z", cars=2, referee_id="f1")])
    v = view(engine, ev)
    assert v.balances == {"points": 0, "value": 200}
    assert v.tier == {"key": "voice", "name": "Voice"}
    feed(engine, ev, [event("r2", "referral_purchase", "2026-01-11T03:00:00Z", cars=1)])
    assert view(engine, ev).balances["value"] == 300


def test_ev_radio_listening_earns_at_most_5_n_a_week(engine: Engine, ev: LoadedProgram) -> None:
    # ISO week 6 of 2026 runs Monday 2 February to Sunday 8 February, Asia/Shanghai time.
    feed(
        engine,
        ev,
        [
            event("mon", "radio_listen", "2026-02-02T01:00:00Z", minutes=60),  # 2 N
            event("wed", "radio_listen", "2026-02-04T01:00:00Z", minutes=29),  # no full half hour
            event("thu", "radio_listen", "2026-02-05T01:00:00Z", minutes=120),  # 4 N, 3 N left
            event("sun", "radio_listen", "2026-02-08T15:30:00Z", minutes=45),  # 23:30 Sunday there
        ],
    )
    assert view(engine, ev).balances["value"] == 5
    assert statuses(engine, ev, "mon") == {"radio_listening": "awarded"}
    assert statuses(engine, ev, "wed") == {"radio_listening": "zero"}
    assert statuses(engine, ev, "thu") == {"radio_listening": "capped"}
    assert statuses(engine, ev, "sun") == {"radio_listening": "cap_reached"}
    # 16:30Z on Sunday is 00:30 on Monday 9 February in Shanghai: a new week.
    feed(engine, ev, [event("next", "radio_listen", "2026-02-08T16:30:00Z", minutes=600)])
    assert view(engine, ev).balances["value"] == 10
    assert statuses(engine, ev, "next") == {"radio_listening": "capped"}


def test_ev_answers_are_capped_per_day(engine: Engine, ev: LoadedProgram) -> None:
    feed(engine, ev, [event(f"a{i}", "answer", f"2026-01-20T0{i}:00:00Z") for i in range(1, 6)])
    assert view(engine, ev).balances == {"points": 20, "value": 2}
    assert statuses(engine, ev, "a2") == {"answer_points": "awarded", "answer_value": "awarded"}
    assert statuses(engine, ev, "a3") == {"answer_points": "awarded", "answer_value": "limit_reached"}
    assert statuses(engine, ev, "a5") == {"answer_points": "cap_reached", "answer_value": "limit_reached"}
    feed(engine, ev, [event("a6", "answer", "2026-01-21T01:00:00Z", question_id="q9")])
    assert view(engine, ev).balances == {"points": 25, "value": 3}


def test_ev_joining_the_radio_club_earns_5_n_once(engine: Engine, ev: LoadedProgram) -> None:
    feed(
        engine,
        ev,
        [
            event("j1", "radio_club_join", "2026-01-10T03:00:00Z"),
            event("j2", "radio_club_join", "2026-02-10T03:00:00Z"),
        ],
    )
    assert view(engine, ev).balances["value"] == 5
    assert statuses(engine, ev, "j2") == {"radio_club": "limit_reached"}


def test_ev_points_expire_at_the_end_of_the_next_calendar_year(engine: Engine, ev: LoadedProgram) -> None:
    # 15:30Z on 31 December 2025 is still 2025 in Shanghai; 16:30Z is already 2026 there.
    feed(
        engine,
        ev,
        [
            event("y2025", "sign_in", "2025-12-31T15:30:00Z"),
            event("y2026", "sign_in", "2025-12-31T16:30:00Z"),
        ],
    )
    assert view(engine, ev).expiring == []
    late_2026 = datetime(2026, 12, 15, tzinfo=UTC)
    assert view(engine, ev, now=late_2026).expiring == [
        {"currency": "points", "amount": 5, "on": "2027-01-01", "text": "5 Points expire on 2027-01-01"}
    ]
    late_2027 = datetime(2027, 12, 15, tzinfo=UTC)
    assert [(e["amount"], e["on"]) for e in view(engine, ev, now=late_2027).expiring] == [
        (5, "2027-01-01"),
        (5, "2028-01-01"),
    ]


# --- content_community -----------------------------------------------------------------------


@pytest.fixture
def content(engine: Engine) -> LoadedProgram:
    return load_example(engine, "content_community")


def test_content_comments_are_capped_per_day(engine: Engine, content: LoadedProgram) -> None:
    feed(engine, content, [event(f"c{i:02d}", "comment", f"2026-01-20T03:{i:02d}:00Z") for i in range(1, 13)])
    # 10 coins from the rule, and 5 for the daily task "Comment 3 times today", once.
    assert view(engine, content).balances == {"growth": 5, "coins": 15}
    assert statuses(engine, content, "c05") == {"comment_growth": "awarded", "comment_coins": "awarded"}
    assert statuses(engine, content, "c06") == {"comment_growth": "cap_reached", "comment_coins": "awarded"}
    assert statuses(engine, content, "c11") == {"comment_growth": "cap_reached", "comment_coins": "limit_reached"}
    feed(engine, content, [event("next_day", "comment", "2026-01-21T03:00:00Z")])
    assert view(engine, content).balances == {"growth": 6, "coins": 16}


def test_content_questions_are_limited_per_day(engine: Engine, content: LoadedProgram) -> None:
    feed(engine, content, [event(f"q{i}", "question", f"2026-01-20T0{i}:00:00Z") for i in range(1, 5)])
    assert view(engine, content).balances == {"growth": 6, "coins": 3}
    assert statuses(engine, content, "q4") == {"question_growth": "limit_reached", "question_coins": "limit_reached"}


def test_content_the_first_answer_bonus_is_given_once(engine: Engine, content: LoadedProgram) -> None:
    feed(engine, content, [event(f"a{i}", "answer", f"2026-01-20T0{i}:00:00Z") for i in range(1, 7)])
    # 5 answers fill the daily cap of 15 growth; the first one also earns the 20 bonus.
    assert view(engine, content).balances == {"growth": 35, "coins": 10}
    with engine.connect() as conn:
        first = {r["rule"]: (r["status"], r["amount"], r["bonus"]) for r in explain.explain(conn, content, "a1").rules}
    assert first == {"answer_growth": ("awarded", 3, 20), "answer_coins": ("awarded", 2, 0)}
    assert statuses(engine, content, "a6") == {"answer_growth": "cap_reached", "answer_coins": "cap_reached"}
    feed(engine, content, [event("a7", "answer", "2026-01-21T01:00:00Z")])
    assert view(engine, content).balances == {"growth": 38, "coins": 12}


def test_content_a_late_earlier_answer_takes_the_bonus_without_doubling_it(
    engine: Engine, content: LoadedProgram
) -> None:
    feed(engine, content, [event("later", "answer", "2026-01-20T03:00:00Z")])
    assert view(engine, content).balances == {"growth": 23, "coins": 2}
    feed(engine, content, [event("earlier", "answer", "2026-01-10T03:00:00Z")])
    assert view(engine, content).balances == {"growth": 26, "coins": 4}
    with engine.connect() as conn:
        [rule] = [r for r in explain.explain(conn, content, "earlier").rules if r["rule"] == "answer_growth"]
    assert rule["bonus"] == 20


def test_content_best_answers_are_capped_per_day(engine: Engine, content: LoadedProgram) -> None:
    feed(engine, content, [event(f"b{i}", "answer_accepted", f"2026-01-20T0{i}:00:00Z") for i in range(1, 5)])
    assert view(engine, content).balances == {"growth": 60, "coins": 40}
    assert statuses(engine, content, "b4") == {"best_answer_growth": "cap_reached", "best_answer_coins": "awarded"}


def test_content_featured_articles_earn_more(engine: Engine, content: LoadedProgram) -> None:
    feed(
        engine,
        content,
        [
            event("plain", "article", "2026-01-20T01:00:00Z"),
            event("featured", "article", "2026-01-20T02:00:00Z", featured=True),
            event("third", "article", "2026-01-20T03:00:00Z", featured=True),
            event("unfeatured", "article", "2026-01-21T03:00:00Z", featured=False),
        ],
    )
    # 5 + (5 + 40) + (40, over the daily limit of 2 pieces) + 5 growth; 30 + 30 coins, and 10
    # for the one-time Author badge of the first article.
    assert view(engine, content).balances == {"growth": 95, "coins": 70}
    assert statuses(engine, content, "plain") == {
        "article_growth": "awarded",
        "featured_growth": "condition_false",
        "featured_coins": "condition_false",
    }
    assert statuses(engine, content, "third")["article_growth"] == "limit_reached"
    assert statuses(engine, content, "unfeatured")["featured_growth"] == "condition_false"


def test_content_members_move_in_as_residents(engine: Engine, content: LoadedProgram) -> None:
    feed(
        engine,
        content,
        [
            event("v1", "owner_verified", "2026-01-05T01:00:00Z"),
            event("v2", "owner_verified", "2026-01-06T01:00:00Z"),
            event("art", "article", "2026-01-07T01:00:00Z", featured=True),
        ],
    )
    v = view(engine, content)
    # 30 coins for the featured article, 20 for the "verify" task, 10 for the Author badge.
    assert v.balances == {"growth": 95, "coins": 60}
    assert v.tier == {"key": "new_immigrant", "name": "New immigrant"}
    assert v.next_tier is not None
    assert v.next_tier["text"] == "5 Growth to Resident"
    assert statuses(engine, content, "v2") == {"owner_verified": "limit_reached"}
    feed(engine, content, [event("ans", "answer", "2026-01-08T01:00:00Z")])
    v = view(engine, content)
    assert v.balances["growth"] == 118
    assert v.tier == {"key": "resident", "name": "Resident"}
