"""Check-in through storage (SQLite and PostgreSQL): the service the endpoint calls, plain
events of the check-in type, make-up cards refused without a trace, and the member view."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Engine, func, select

from kinloop.domain.errors import CheckinNotOffered, MakeupRefused
from kinloop.program.loader import parse_program
from kinloop.services import checkin as checkin_svc
from kinloop.services import member_view, members, programs
from kinloop.services.ingest import ingest
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import checkin_states, entries, events
from tests.conftest import NOW, load_example

PROGRAM = """
key: club
name: Club
timezone: Asia/Shanghai
currencies:
  - {key: points, name: Points, kind: points}
  - {key: value, name: Value, unit: N, kind: growth}
event_types:
  - key: sign_in
checkin:
  event: sign_in
  currency: points
  ladder: [1, 2, 3]
  milestones:
    - {days: 4, currency: value, amount: 10}
  first_day_gift: {currency: points, amount: 20}
  makeup_cards_per_month: 1
"""


@pytest.fixture
def club(engine: Engine) -> LoadedProgram:
    with engine.begin() as conn:
        return programs.load(conn, parse_program(PROGRAM), PROGRAM, now=NOW).loaded


def stamp(day: date, hour: int = 2) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


D = date(2026, 2, 1)


def check(engine: Engine, club: LoadedProgram, day: date, member: str = "m1", **kw: object) -> dict[str, object]:
    with engine.begin() as conn:
        return checkin_svc.check_in(conn, club, member, at=stamp(day), now=NOW, **kw)  # type: ignore[arg-type]


def test_the_reply_says_what_was_given_and_the_streak_in_words(engine: Engine, club: LoadedProgram) -> None:
    first = check(engine, club, D)
    assert first["status"] == "accepted"
    assert first["event_id"] == "check-in:m1:2026-02-01"
    assert [a["text"] for a in first["awards"]] == ["1 Points", "20 Points"]  # type: ignore[index]
    assert first["checkin"]["text"] == "checked in: day 1 in a row: 1 Points, 20 Points; 3 days to the 4-day bonus"  # type: ignore[index]
    second = check(engine, club, D + timedelta(days=1))
    assert second["checkin"]["text"] == "checked in: day 2 in a row: 2 Points; 2 days to the 4-day bonus"  # type: ignore[index]


def test_a_second_check_in_the_same_local_day_returns_the_first_reply(engine: Engine, club: LoadedProgram) -> None:
    first = check(engine, club, D)
    with engine.begin() as conn:
        # 15:30 UTC is 23:30 in Shanghai: the same local day, the same derived event id.
        again = checkin_svc.check_in(conn, club, "m1", at=stamp(D, 15), now=NOW)
    assert again["status"] == "duplicate"
    assert again["awards"] == first["awards"]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar() == 1
        assert conn.execute(select(func.sum(entries.c.amount))).scalar() == 21


def test_the_members_own_time_zone_decides_the_day(engine: Engine, club: LoadedProgram) -> None:
    with engine.begin() as conn:
        members.set_profile(conn, club.program_id, "m1", {"timezone": "America/Los_Angeles"}, now=NOW)
    # 02:00 UTC on 1 February is still 31 January in Los Angeles.
    assert check(engine, club, D)["event_id"] == "check-in:m1:2026-01-31"


def test_a_make_up_card_mends_the_streak_and_reaches_the_milestone(engine: Engine, club: LoadedProgram) -> None:
    for i in (0, 1, 2):
        check(engine, club, D + timedelta(days=i))
    # 4 February missed; on the 5th the member uses the month's card, then checks in.
    made_up = check(engine, club, D + timedelta(days=4), makeup_for=D + timedelta(days=3))
    assert made_up["checkin"]["status"] == "made_up"  # type: ignore[index]
    assert [(a["currency"], a["amount"]) for a in made_up["awards"]] == [("value", 10)]  # type: ignore[index]
    today = check(engine, club, D + timedelta(days=4))
    assert today["checkin"]["streak"] == 5  # type: ignore[index]
    with engine.connect() as conn:
        view = member_view.show(conn, club, "m1", now=stamp(D + timedelta(days=4)))
    assert view.checkin is not None
    assert view.checkin["streak"] == 5
    assert view.checkin["checked_in_today"] is True
    assert view.checkin["makeup_cards_left"] == 0
    assert view.checkin["next_reward"] == {
        "day": 6,
        "on": "2026-02-06",
        "currency": "points",
        "amount": 3,
        "text": "day 6: 3 Points",
    }
    assert view.checkin["next_milestone"] is None


def test_a_refused_make_up_writes_nothing(engine: Engine, club: LoadedProgram) -> None:
    check(engine, club, D)
    with engine.connect() as conn:
        before = conn.execute(select(checkin_states)).all()
        count = conn.execute(select(func.count()).select_from(events)).scalar()
    with pytest.raises(MakeupRefused, match="not a missed day"):
        check(engine, club, D + timedelta(days=2), makeup_for=D)
    with engine.connect() as conn:
        assert conn.execute(select(checkin_states)).all() == before
        assert conn.execute(select(func.count()).select_from(events)).scalar() == count


def test_plain_events_of_the_check_in_type_check_in_too(engine: Engine, club: LoadedProgram) -> None:
    raws = [
        {
            "event_id": f"s{i}",
            "member_id": "m2",
            "type": "sign_in",
            "occurred_at": stamp(D + timedelta(days=i)).isoformat(),
        }
        for i in range(4)
    ]
    with engine.begin() as conn:
        results = ingest(conn, club, raws, now=NOW)
    assert [r.outcome["checkin"]["streak"] for r in results] == [1, 2, 3, 4]
    with engine.connect() as conn:
        view = member_view.show(conn, club, "m2", now=stamp(D + timedelta(days=5)))
    assert view.balances == {"points": 1 + 2 + 3 + 1 + 20, "value": 10}
    assert view.checkin is not None
    assert (view.checkin["streak"], view.checkin["best"], view.checkin["checked_in_today"]) == (0, 4, False)
    assert view.checkin["text"] == "no streak yet; not checked in today"


def test_a_program_without_check_in_refuses_it(engine: Engine) -> None:
    content = load_example(engine, "content_community")
    with engine.begin() as conn, pytest.raises(CheckinNotOffered):
        checkin_svc.check_in(conn, content, "m1", at=NOW, now=NOW)
    with engine.begin() as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar() == 0
        members.set_profile(conn, content.program_id, "m1", {}, now=NOW)
        view = member_view.show(conn, content, "m1", now=NOW)
    assert view.checkin is None


def test_check_in_awards_can_stay_out_of_tier_qualification(engine: Engine) -> None:
    text = (
        PROGRAM.replace("makeup_cards_per_month: 1", "makeup_cards_per_month: 1\n  counts_toward_tiers: false")
        + "ladder:\n  currency: value\n  tiers:\n    - {key: fan, name: Fan, threshold: 0}\n"
        + "    - {key: voice, name: Voice, threshold: 10}\n"
    )
    counted = text.replace("counts_toward_tiers: false", "counts_toward_tiers: true").replace("key: club", "key: open")
    tiers = {}
    for source in (text, counted):
        with engine.begin() as conn:
            loaded = programs.load(conn, parse_program(source), source, now=NOW).loaded
        for i in range(4):  # the 4th day in a row earns the 10 N milestone
            with engine.begin() as conn:
                checkin_svc.check_in(conn, loaded, "m1", at=stamp(D + timedelta(days=i)), now=NOW)
        with engine.connect() as conn:
            view = member_view.show(conn, loaded, "m1", now=NOW)
        assert view.balances["value"] == 10
        tiers[loaded.program.key] = view.tier["key"] if view.tier else None
    assert tiers == {"club": "fan", "open": "voice"}
