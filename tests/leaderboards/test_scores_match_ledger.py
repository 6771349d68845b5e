"""Scores are a projection: after any mix of batches, late events (moving first-time bonuses)
and reversals, every stored score equals what the ledger says about the board's period."""

from __future__ import annotations

import itertools
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, select, update

from kinloop.domain import leaderboards as D
from kinloop.domain.errors import AlreadyReversed
from kinloop.domain.periods import local_day
from kinloop.services import ingest, leaderboards, ledger, verify
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import entries, events, leaderboard_scores, members
from tests.conftest import load_example
from tests.leaderboards.test_boards import NOW

START = datetime(2026, 2, 20, tzinfo=UTC)
_examples = itertools.count()
KINDS = ("answer", "answer_accepted", "comment", "question")

event_specs = st.lists(
    st.tuples(st.sampled_from(["ann", "ben", "cy"]), st.sampled_from(KINDS), st.integers(0, 16 * 24)),
    min_size=1,
    max_size=30,
)


def stored(engine: Engine, program_id: int) -> dict[tuple[str, str, str], int]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                leaderboard_scores.c.board,
                leaderboard_scores.c.period,
                leaderboard_scores.c.member_id,
                leaderboard_scores.c.score,
            ).where(leaderboard_scores.c.program_id == program_id)
        ).all()
    return {(b, p, m): s for b, p, m, s in rows if s}


def from_ledger(engine: Engine, lp: LoadedProgram, reversed_ids: set[str]) -> dict[tuple[str, str, str], int]:
    """Recompute: growth earned net of claw-backs per event's month; answers not reversed per week."""
    boards = {b.key: b for b in lp.program.leaderboards}
    out: Counter[tuple[str, str, str]] = Counter()
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                members.c.member_id,
                events.c.event_id,
                events.c.type,
                events.c.occurred_at,
                entries.c.kind,
                entries.c.currency,
                entries.c.amount,
            )
            .select_from(
                events.join(members, members.c.id == events.c.member_pk).outerjoin(
                    entries, entries.c.event_pk == events.c.id
                )
            )
            .where(events.c.program_id == lp.program_id)
        ).all()
    counted: set[str] = set()
    for member_id, event_id, etype, at, kind, currency, amount in rows:
        day = local_day(at, lp.program.timezone)
        if etype == "answer" and event_id not in reversed_ids and event_id not in counted:
            counted.add(event_id)
            out[("weekly_answers", D.board_period_key(boards["weekly_answers"], day), member_id)] += 1
        if currency == "growth":
            sign = 1 if kind == "earn" else -1 if kind in ("reversal", "write_off") else 0
            out[("city_growth", D.board_period_key(boards["city_growth"], day), member_id)] += sign * amount
    return {k: v for k, v in out.items() if v}


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(specs=event_specs, batch=st.integers(1, 8), reverse=st.sets(st.integers(0, 29), max_size=6))
# A late first answer takes the first-time bonus from the answer booked before it.
@example(specs=[("ann", "answer", 48), ("ann", "answer", 0)], batch=1, reverse=set())
# ... and a reversal of the event that holds it.
@example(specs=[("ann", "answer", 48), ("ann", "answer", 0), ("ben", "comment", 3)], batch=1, reverse={1, 2})
def test_stored_scores_equal_the_ledger(
    engine: Engine, specs: list[tuple[str, str, int]], batch: int, reverse: set[int]
) -> None:
    lp = load_example(engine, "content_community")
    tag = f"x{next(_examples)}"  # ids of their own: the database outlives examples
    raws = [
        {
            "event_id": f"{tag}-{i}",
            "member_id": f"{tag}-{m}",
            "type": t,
            "occurred_at": (START + timedelta(hours=h)).isoformat(),
        }
        for i, (m, t, h) in enumerate(specs)
    ]
    for at in range(0, len(raws), batch):  # in submission order: later batches hold earlier events
        with engine.begin() as conn:
            ingest.ingest(conn, lp, raws[at : at + batch], now=NOW)
    reversed_ids = set()
    for i in sorted(reverse):
        if i < len(raws):
            try:
                with engine.begin() as conn:
                    ledger.reverse(conn, lp, raws[i]["event_id"], amount=None, reason="test", actor="t", now=NOW)
                reversed_ids.add(raws[i]["event_id"])
            except AlreadyReversed:
                pass  # it earned nothing
    mine = {k: v for k, v in stored(engine, lp.program_id).items() if k[2].startswith(tag)}
    expected = {k: v for k, v in from_ledger(engine, lp, reversed_ids).items() if k[2].startswith(tag)}
    assert mine == expected
    # `kinloop verify` recomputes the same from the ledger, and finds every score right.
    with engine.connect() as conn:
        assert leaderboards.mismatches(conn, lp) == []
        assert {k: v for k, v in leaderboards.recompute(conn, lp).items() if k[0] == "weekly_answers"} == {
            k: v for k, v in stored_by_pk(conn, lp.program_id).items() if k[0] == "weekly_answers"
        }


def stored_by_pk(conn: Any, program_id: int) -> dict[tuple[str, str, int], int]:
    rows = conn.execute(
        select(
            leaderboard_scores.c.board,
            leaderboard_scores.c.period,
            leaderboard_scores.c.member_pk,
            leaderboard_scores.c.score,
        ).where(leaderboard_scores.c.program_id == program_id)
    ).all()
    return {(b, p, m): s for b, p, m, s in rows if s}


def test_verify_reports_a_score_that_differs_from_the_ledger(engine: Engine) -> None:
    lp = load_example(engine, "content_community")
    with engine.begin() as conn:
        ingest.ingest(
            conn,
            lp,
            [{"event_id": "a", "member_id": "ann", "type": "answer", "occurred_at": START.isoformat()}],
            now=NOW,
        )
        assert verify.verify(conn, lp).ok
        conn.execute(update(leaderboard_scores).where(leaderboard_scores.c.board == "city_growth").values(score=99))
        report = verify.verify(conn, lp)
    assert [(m.check, m.member_id, m.currency, m.expected, m.found) for m in report.mismatches] == [
        ("leaderboard.score", "ann", "city_growth/m2026-02", 23, 99)
    ]
