"""Leaderboards against a real store (SQLite and PostgreSQL): scores kept by ingestion, ranks
with deterministic ties, boards per city, past periods, and reversals lowering scores."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, delete, insert

from kinloop.domain import leaderboards as D
from kinloop.domain.errors import InvalidInput, UnknownLeaderboard, UnknownMember
from kinloop.services import ingest, leaderboards, ledger, members
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import leaderboard_scores
from tests.conftest import EXAMPLES, load_example

NOW = datetime(2026, 3, 8, 12, 0, tzinfo=UTC)  # Sunday evening of week 2026-W10 in Shanghai


@pytest.fixture
def community(engine: Engine) -> LoadedProgram:
    return load_example(engine, "content_community")


def answer(event_id: str, member_id: str, at: datetime) -> dict[str, Any]:
    return {"event_id": event_id, "member_id": member_id, "type": "answer", "occurred_at": at.isoformat()}


def book(engine: Engine, lp: LoadedProgram, raws: list[dict[str, Any]], now: datetime = NOW) -> None:
    with engine.begin() as conn:
        results = ingest.ingest(conn, lp, raws, now=now)
    assert [r.error for r in results if r.status != "accepted"] == []


def top(engine: Engine, lp: LoadedProgram, key: str, **kw: Any) -> dict[str, Any]:
    kw.setdefault("period", None)
    kw.setdefault("group", None)
    kw.setdefault("limit", 10)
    with engine.connect() as conn:
        return leaderboards.top(conn, lp, key, now=NOW, **kw)


def ranks(board: dict[str, Any]) -> list[tuple[int, str, Any]]:
    return [(e["rank"], e["member_id"], e["score"]) for e in board["entries"]]


def standing(engine: Engine, lp: LoadedProgram, key: str, member_id: str, period: str | None = None) -> dict[str, Any]:
    with engine.connect() as conn:
        return leaderboards.standing(conn, lp, key, member_id, period=period, now=NOW)


MON = datetime(2026, 3, 2, 2, 0, tzinfo=UTC)  # Monday 10:00 in Shanghai


def test_ties_go_to_who_reached_the_score_first_then_to_the_member_id(engine: Engine, community: LoadedProgram) -> None:
    book(
        engine,
        community,
        [
            answer("a1", "ann", MON),
            answer("a2", "ann", MON + timedelta(hours=5)),  # ann reaches 2 at +5h
            answer("b1", "ben", MON + timedelta(hours=1)),
            answer("b2", "ben", MON + timedelta(hours=2)),  # ben reaches 2 at +2h: ahead of ann
            # Three with one answer at the same instant: member ids in code-point order
            # ("Zoe" before "amy": capitals sort first, on PostgreSQL as on SQLite).
            answer("z1", "zed", MON + timedelta(hours=3)),
            answer("y1", "amy", MON + timedelta(hours=3)),
            answer("x1", "Zoe", MON + timedelta(hours=3)),
        ],
    )
    board = top(engine, community, "weekly_answers")
    assert ranks(board) == [(1, "ben", 2), (2, "ann", 2), (3, "Zoe", 1), (4, "amy", 1), (5, "zed", 1)]
    assert {k: board[k] for k in ("board", "name", "period", "group", "members", "measure")} == {
        "board": "weekly_answers",
        "name": "Top answerers this week",
        "period": "2026-W10",
        "group": None,
        "members": 5,
        "measure": {"event": "answer", "unit": "answers"},
    }
    assert board["entries"][0]["text"] == "2 answers"
    assert board["order"] == "score (highest first), then who reached it first, then member_id"
    assert ranks(top(engine, community, "weekly_answers", limit=2)) == [(1, "ben", 2), (2, "ann", 2)]
    # Each member's own rank agrees with the list.
    assert [standing(engine, community, "weekly_answers", m)["rank"] for m in ("ben", "ann", "Zoe", "amy", "zed")] == [
        1,
        2,
        3,
        4,
        5,
    ]
    assert standing(engine, community, "weekly_answers", "amy")["text"] == (
        "4th of 5 on Top answerers this week (2026-W10), with 1 answer"
    )


def test_periods_are_kept_apart_and_past_ones_stay_readable(engine: Engine, community: LoadedProgram) -> None:
    sunday_night = datetime(2026, 3, 8, 15, 59, tzinfo=UTC)  # 23:59 on Sunday in Shanghai
    pair = [answer("a1", "ann", sunday_night), answer("a2", "ann", sunday_night + timedelta(minutes=1))]
    book(engine, community, pair, now=NOW + timedelta(days=2))
    assert ranks(top(engine, community, "weekly_answers", period="2026-W10")) == [(1, "ann", 1)]
    assert ranks(top(engine, community, "weekly_answers", period="2026-03-09")) == [(1, "ann", 1)]
    assert top(engine, community, "weekly_answers", period="2026-W09")["entries"] == []
    assert standing(engine, community, "weekly_answers", "ann", period="2026-W09") | {"measure": None} == {
        "board": "weekly_answers",
        "name": "Top answerers this week",
        "period": "2026-W09",
        "group": None,
        "measure": None,
        "order": leaderboards.ORDER,
        "member_id": "ann",
        "rank": None,
        "of": 0,
        "score": 0,
        "text": "not on Top answerers this week (2026-W09) yet",
    }


def test_a_grouped_board_ranks_members_within_their_city(engine: Engine, community: LoadedProgram) -> None:
    with engine.begin() as conn:
        for member_id, city in (("ann", "Shanghai"), ("ben", "Beijing"), ("cat", "Shanghai")):
            members.set_profile(conn, community.program_id, member_id, {"city": city}, now=NOW)
    book(
        engine,
        community,
        [
            answer("a1", "ann", MON),  # 3 growth and a first-answer bonus of 20
            answer("b1", "ben", MON),
            answer("b2", "ben", MON + timedelta(hours=1)),
            answer("c1", "cat", MON),
            answer("c2", "cat", MON + timedelta(hours=1)),
            answer("d1", "dan", MON),  # no city: on no city's board
        ],
    )
    shanghai = top(engine, community, "city_growth", group="Shanghai")
    assert (shanghai["group"], shanghai["period"], ranks(shanghai)) == (
        "Shanghai",
        "2026-03",
        [(1, "cat", 26), (2, "ann", 23)],
    )
    assert shanghai["entries"][0]["text"] == "26 Growth"
    assert ranks(top(engine, community, "city_growth", group="Beijing")) == [(1, "ben", 26)]
    ann = standing(engine, community, "city_growth", "ann")
    assert (ann["group"], ann["rank"], ann["of"], ann["text"]) == (
        "Shanghai",
        2,
        2,
        "2nd of 2 on City growth this month (2026-03), with 23 Growth",
    )
    dan = standing(engine, community, "city_growth", "dan")
    assert (dan["group"], dan["rank"], dan["score"]) == (None, None, 23)
    with pytest.raises(InvalidInput, match="ranks members per city: give a group"):
        top(engine, community, "city_growth")
    with pytest.raises(InvalidInput, match="has no groups"):
        top(engine, community, "weekly_answers", group="Shanghai")
    # A member who moves city takes the period's score along with the next event.
    with engine.begin() as conn:
        members.set_profile(conn, community.program_id, "ann", {"city": "Beijing"}, now=NOW)
    book(engine, community, [answer("a2", "ann", MON + timedelta(hours=2))])
    # Both have 26; ben reached it an hour earlier.
    assert ranks(top(engine, community, "city_growth", group="Beijing")) == [(1, "ben", 26), (2, "ann", 26)]
    assert ranks(top(engine, community, "city_growth", group="Shanghai")) == [(1, "cat", 26)]


def test_reversals_lower_scores(engine: Engine, community: LoadedProgram, coffee: LoadedProgram) -> None:
    purchases = [
        {
            "event_id": f"p{i}",
            "member_id": "ada",
            "type": "purchase",
            "occurred_at": "2026-03-02T09:00:00Z",
            "attributes": {"amount": amount},
        }
        for i, amount in enumerate([1000, 500])
    ]
    book(engine, coffee, purchases)
    assert ranks(top(engine, coffee, "monthly_stars")) == [(1, "ada", 30)]
    with engine.begin() as conn:
        ledger.reverse(conn, coffee, "p0", amount="500", reason="half refunded", actor="t", now=NOW)
    assert ranks(top(engine, coffee, "monthly_stars")) == [(1, "ada", 20)]
    with engine.begin() as conn:
        ledger.reverse(conn, coffee, "p1", amount=None, reason="refunded", actor="t", now=NOW)
    assert ranks(top(engine, coffee, "monthly_stars")) == [(1, "ada", 10)]
    # An event count drops when the event is reversed in full.
    book(engine, community, [answer("a1", "ann", MON), answer("a2", "ann", MON + timedelta(hours=1))])
    with engine.begin() as conn:
        ledger.reverse(conn, community, "a2", amount=None, reason="spam", actor="t", now=NOW)
    assert ranks(top(engine, community, "weekly_answers")) == [(1, "ann", 1)]


def test_unknown_board_or_member(engine: Engine, community: LoadedProgram) -> None:
    with pytest.raises(UnknownLeaderboard, match="leaderboards: weekly_answers, city_growth"):
        top(engine, community, "monthly")
    with pytest.raises(UnknownMember):
        standing(engine, community, "weekly_answers", "nobody")


def test_a_program_without_boards_writes_no_scores(engine: Engine, coffee: LoadedProgram) -> None:
    from kinloop.program.loader import parse_program
    from kinloop.services import programs

    source = (EXAMPLES / "ev_community.yaml").read_text(encoding="utf-8")
    with engine.begin() as conn:
        ev = programs.load(conn, parse_program(source), source, now=NOW).loaded
    assert ev.program.leaderboards == ()
    with engine.begin() as conn:
        ingest.ingest(
            conn,
            ev,
            [
                {
                    "event_id": "e",
                    "member_id": "m",
                    "type": ev.program.rules[0].event_type,
                    "occurred_at": MON.isoformat(),
                    "attributes": {},
                }
            ],
            now=NOW,
        )
        assert conn.execute(leaderboard_scores.select()).all() == []


# --- the stored order is the documented order ---------------------------------------------

standings = st.lists(
    st.tuples(st.sampled_from(["a", "B", "b", "ab", "Ab", "z", "é"]), st.integers(0, 3), st.integers(0, 2)),
    min_size=1,
    max_size=7,
    unique_by=lambda t: t[0],
)


@pytest.fixture
def scored(engine: Engine, community: LoadedProgram) -> tuple[Engine, LoadedProgram]:
    with engine.begin() as conn:
        ingest.ingest(
            conn, community, [answer(f"e-{m}", m, MON) for m in ["a", "B", "b", "ab", "Ab", "z", "é"]], now=NOW
        )
    return engine, community


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=standings)
def test_the_database_ranks_exactly_as_the_documented_order(
    scored: tuple[Engine, LoadedProgram], rows: list[tuple[str, int, int]]
) -> None:
    engine, lp = scored
    with engine.begin() as conn:
        pks = {m.member_id: m.pk for m in members.ensure(conn, lp.program_id, [r[0] for r in rows], NOW).values()}
        conn.execute(delete(leaderboard_scores))
        conn.execute(
            insert(leaderboard_scores),
            [
                {
                    "program_id": lp.program_id,
                    "board": "weekly_answers",
                    "period": "w2026-10",
                    "member_pk": pks[m],
                    "grp": "",
                    "member_id": m,
                    "score": score,
                    "reached_at": MON + timedelta(minutes=minute),
                }
                for m, score, minute in rows
            ],
        )
    expected = [s.member_id for s in D.ranked(D.Standing(m, sc, MON + timedelta(minutes=mi)) for m, sc, mi in rows)]
    assert [e["member_id"] for e in top(engine, lp, "weekly_answers")["entries"]] == expected
    assert [standing(engine, lp, "weekly_answers", m)["rank"] for m in expected] == list(range(1, len(expected) + 1))
