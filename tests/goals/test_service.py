"""Shared goals through the service, on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine, select

from kinloop.domain.errors import InsufficientBalance, OutletClosed
from kinloop.services import goals, ledger, webhooks
from kinloop.services import verify as verify_svc
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import outbox
from tests.api.conftest import row_counts
from tests.conftest import NOW


def fund(engine: Engine, coffee: LoadedProgram, member_id: str, amount: int) -> None:
    with engine.begin() as conn:
        ledger.adjust(conn, coffee, member_id, "beans", amount, reason="test", actor="t", key=None, now=NOW)


def give(engine: Engine, coffee: LoadedProgram, goal: str, member_id: str, amount: int, key: str) -> dict:  # type: ignore[type-arg]
    with engine.begin() as conn:
        return goals.donate(conn, coffee, goal, member_id, amount=amount, donation_key=key, now=NOW)


def test_reaching_a_target_records_a_milestone_with_donors_and_starts_the_next_round(
    engine: Engine, coffee: LoadedProgram
) -> None:
    with engine.begin() as conn:
        webhooks.create(conn, coffee.program_id, url="https://example.com/h", kinds=["goal.reached"], now=NOW)
        created = goals.create(
            conn,
            coffee,
            key="tree",
            name="Plant a tree",
            currency_key="beans",
            target=100,
            repeat=True,
            now=NOW,
            actor="admin",
        )
    assert created["progress_text"] == "100 Beans to Plant a tree (round 1)"
    fund(engine, coffee, "m1", 500)
    fund(engine, coffee, "m2", 500)
    assert give(engine, coffee, "tree", "m1", 60, "d1")["progress_text"] == "40 Beans to Plant a tree (round 1)"
    again = give(engine, coffee, "tree", "m1", 60, "d1")
    assert (again["replayed"], again["donated"], again["raised"]) == (True, 60, 60)
    reached = give(engine, coffee, "tree", "m2", 70, "d2")
    assert (reached["donated"], reached["reached"], reached["current_round"], reached["raised"]) == (40, True, 2, 0)
    with engine.connect() as conn:
        view = goals.show(conn, coffee, "tree")
        messages = conn.execute(select(outbox.c.kind, outbox.c.payload)).all()
        assert verify_svc.verify(conn, coffee).ok
    assert view["milestones"][0]["donors"] == [
        {"member_id": "m1", "amount": 60},
        {"member_id": "m2", "amount": 40},
    ]
    assert [m.kind for m in messages] == ["goal.reached"]
    assert messages[0].payload["text"] == "Plant a tree reached with 100 Beans from 2 members"


def test_a_one_off_goal_closes_and_refuses_more(engine: Engine, coffee: LoadedProgram) -> None:
    with engine.begin() as conn:
        goals.create(
            conn,
            coffee,
            key="well",
            name="A well",
            currency_key="beans",
            target=10,
            repeat=False,
            now=NOW,
            actor="admin",
        )
    fund(engine, coffee, "m1", 50)
    give(engine, coffee, "well", "m1", 10, "a")
    before = row_counts(engine)
    with pytest.raises(OutletClosed):
        give(engine, coffee, "well", "m1", 5, "b")
    assert row_counts(engine) == before
    with engine.connect() as conn:
        assert goals.show(conn, coffee, "well")["progress_text"] == "A well reached"
        assert goals.stats(conn, coffee)[0]["rounds_reached"] == 1


def test_a_donation_beyond_the_balance_is_refused_and_writes_nothing(engine: Engine, coffee: LoadedProgram) -> None:
    with engine.begin() as conn:
        goals.create(
            conn,
            coffee,
            key="tree",
            name="Tree",
            currency_key="beans",
            target=100,
            repeat=False,
            now=NOW,
            actor="admin",
        )
    fund(engine, coffee, "m1", 5)
    before = row_counts(engine)
    with pytest.raises(InsufficientBalance):
        give(engine, coffee, "tree", "m1", 6, "x")
    assert row_counts(engine) == before
