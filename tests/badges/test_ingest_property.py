"""The invariant through storage: whatever the batching and repeats, the badges a member holds
after ingestion are those whose criteria the member's history satisfies."""

from __future__ import annotations

import tempfile
from datetime import timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from kinloop.services import ingest
from kinloop.store import migrate
from kinloop.store.db import connect
from kinloop.store.tables import member_badges
from tests.badges.programs import load
from tests.badges.test_domain import START, TYPES, _expected
from tests.conftest import NOW


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[tuple[str, int, Decimal]], list[int], list[int]]:
    """Events in time order, the sizes of the batches they are sent in, and which get resent."""
    raw = draw(
        st.lists(
            st.tuples(
                st.sampled_from(TYPES),
                st.integers(min_value=0, max_value=60 * 24 * 10),
                st.decimals(min_value=0, max_value=80, places=2),
            ),
            min_size=1,
            max_size=30,
        )
    )
    cuts = draw(st.lists(st.integers(min_value=1, max_value=8), min_size=1, max_size=10))
    repeats = draw(st.lists(st.integers(min_value=0, max_value=len(raw) - 1), max_size=5))
    return raw, cuts, repeats


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_held_badges_match_the_history_through_storage(
    case: tuple[list[tuple[str, int, Decimal]], list[int], list[int]],
) -> None:
    raw, cuts, repeats = case
    history = sorted(((t, START + timedelta(minutes=m), x) for t, m, x in raw), key=lambda e: (e[1], e[0]))
    events = [
        {
            "event_id": f"e{i}",
            "member_id": "m1",
            "type": t,
            "occurred_at": at.isoformat(),
            "attributes": {"amount": str(x)} if t == "purchase" else {},
        }
        for i, (t, at, x) in enumerate(history)
    ]
    with tempfile.TemporaryDirectory() as tmp:
        engine = connect(f"sqlite:///{tmp}/k.db")
        migrate.upgrade(engine)
        forum = load(engine)
        sent, i = 0, 0
        while sent < len(events):
            size = cuts[i % len(cuts)]
            batch = events[sent : sent + size]
            # Repeats of events already sent (or in this batch) ride along: duplicates, nothing more.
            batch += [events[r] for r in repeats if r < sent + size]
            with engine.begin() as conn:
                ingest.ingest(conn, forum, batch, now=NOW)
            sent, i = sent + size, i + 1
        with engine.connect() as conn:
            held = {(b, lv) for b, lv in conn.execute(select(member_badges.c.badge, member_badges.c.level))}
        engine.dispose()
    assert held == _expected(history)
