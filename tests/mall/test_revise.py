"""`mall.revise`: an edit of some fields of a reward, checked with every problem at once, and
what it would change (for the audit log)."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import Engine

from kinloop.services import mall
from kinloop.services.programs import LoadedProgram
from tests.conftest import NOW


def _mug(engine: Engine, coffee: LoadedProgram) -> mall.StoredReward:
    with engine.begin() as conn:
        stored, _ = mall.put(
            conn, coffee, "mug", {"name": "Mug", "currency": "beans", "price": 400, "stock": 10}, now=NOW
        )
    return stored


def test_an_edit_reports_every_problem_with_its_field(engine: Engine, coffee: LoadedProgram) -> None:
    stored = _mug(engine, coffee)
    revision = mall.revise(
        stored,
        coffee.program,
        {
            "price": "0",
            "promos": [{"starts_at": "2026-03-02T00:00:00+01:00", "ends_at": "2026-03-01T00:00:00+01:00", "price": 5}],
            "tiers": ["platinum"],
        },
    )
    assert {i.path for i in revision.issues} == {"price", "promos[0].ends_at", "tiers[0]"}
    assert revision.changed == {}


def test_an_edit_says_what_it_changes_and_keeps_the_other_fields(engine: Engine, coffee: LoadedProgram) -> None:
    stored = _mug(engine, coffee)
    revision = mall.revise(stored, coffee.program, {"price": Decimal("450"), "stock": 10, "active": False})
    assert revision.issues == []
    assert revision.changed == {"price": ["400", "450"], "active": [True, False]}
    assert revision.fields["name"] == "Mug"
    with engine.begin() as conn:
        saved, created = mall.put(conn, coffee, "mug", revision.fields, now=NOW)
    assert not created
    assert (saved.reward.price, saved.reward.stock, saved.reward.active) == (450, 10, False)


def test_the_same_values_written_differently_are_no_change(engine: Engine, coffee: LoadedProgram) -> None:
    stored = _mug(engine, coffee)
    assert mall.revise(stored, coffee.program, {"price": "400.0", "stock": 10}).changed == {}
