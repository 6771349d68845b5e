"""Holds on SQLite and PostgreSQL: reserve, capture (idempotent), release, time-out."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import Engine

from kinloop.domain.errors import HoldExpired, IdempotencyConflict, IllegalTransition, InsufficientBalance
from kinloop.services import holds, member_view
from kinloop.services.programs import LoadedProgram
from tests.conftest import NOW
from tests.mall.conftest import assert_verified, beans, counts, earn, lot_state


def hold(engine: Engine, coffee: LoadedProgram, amount: int = 80, **kw: object) -> holds.Hold:
    with engine.begin() as conn:
        return holds.create(conn, coffee, "m1", "beans", amount, now=NOW, timeout_seconds=600, **kw)  # type: ignore[arg-type]


def test_a_hold_moves_points_to_held_visible_in_the_member_view(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 100)
    h = hold(engine, coffee, reference="cart-7")
    assert h.as_json(coffee.program, NOW)["text"] == "80 Beans held"
    with engine.connect() as conn:
        view = member_view.show(conn, coffee, "m1", now=NOW).as_json()
    assert view["balances"]["beans"] == 20
    assert view["holds"]["held"] == {"beans": 80}
    assert view["holds"]["text"] == {"beans": "80 Beans held"}
    assert [a["reference"] for a in view["holds"]["active"]] == ["cart-7"]
    assert_verified(engine, coffee)


def test_holding_more_than_available_is_refused(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 50)
    before = counts(engine)
    with pytest.raises(InsufficientBalance):
        hold(engine, coffee, 80)
    assert counts(engine) == before


def test_capture_is_idempotent(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 100)
    h = hold(engine, coffee)
    with engine.begin() as conn:
        first = holds.capture(conn, coffee, h.row.id, now=NOW)
    before = counts(engine)
    with engine.begin() as conn:
        again = holds.capture(conn, coffee, h.row.id, now=NOW)
    assert (first.row.status, first.outcome, again.outcome) == ("captured", "done", "repeat")
    assert counts(engine) == before
    assert beans(engine, coffee, "m1") == 20
    with engine.connect() as conn:
        assert member_view.show(conn, coffee, "m1", now=NOW).as_json()["holds"]["held"] == {}
    with engine.begin() as conn, pytest.raises(IllegalTransition, match="captured"):
        holds.release(conn, coffee, h.row.id, now=NOW)
    assert_verified(engine, coffee)


def test_release_puts_the_points_back_into_their_lots(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 50, at=NOW - timedelta(days=10))
    earn(engine, coffee, "m1", 50)
    before = lot_state(engine)
    h = hold(engine, coffee)
    with engine.begin() as conn:
        released = holds.release(conn, coffee, h.row.id, now=NOW)
    assert released.row.status == "released"
    assert lot_state(engine) == before
    assert beans(engine, coffee, "m1") == 100
    with engine.begin() as conn:
        assert holds.release(conn, coffee, h.row.id, now=NOW).outcome == "repeat"
    with engine.begin() as conn, pytest.raises(IllegalTransition, match="released"):
        holds.capture(conn, coffee, h.row.id, now=NOW)
    assert_verified(engine, coffee)


def test_a_timed_out_hold_cannot_be_captured_and_gives_its_points_back(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 100)
    h = hold(engine, coffee)
    later = NOW + timedelta(minutes=11)
    with engine.connect() as conn:
        assert holds.get(conn, coffee, h.row.id).as_json(coffee.program, later)["status"] == "expired"  # lazily
    with engine.begin() as conn:
        got = holds.capture(conn, coffee, h.row.id, now=later)
    assert (got.outcome, got.row.status) == ("expired", "expired")
    assert beans(engine, coffee, "m1", later) == 100
    with engine.begin() as conn, pytest.raises(HoldExpired):
        holds.capture(conn, coffee, h.row.id, now=later)
    assert_verified(engine, coffee)


def test_the_expiry_job_releases_each_timed_out_hold_once(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 200)
    hold(engine, coffee, 80)
    with engine.begin() as conn:
        holds.create(conn, coffee, "m1", "beans", 30, now=NOW, timeout_seconds=3600)
    later = NOW + timedelta(minutes=30)
    with engine.begin() as conn:
        assert holds.expire_due(conn, coffee, now=later) == {"beans": 80}
    with engine.begin() as conn:
        assert holds.expire_due(conn, coffee, now=later) == {}
    assert beans(engine, coffee, "m1", later) == 170
    assert_verified(engine, coffee)


def test_a_hold_is_idempotent_on_its_key(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 200)
    first = hold(engine, coffee, 80, key="cart-1")
    again = hold(engine, coffee, 80, key="cart-1")
    assert (again.row.id, again.outcome) == (first.row.id, "repeat")
    assert beans(engine, coffee, "m1") == 120
    with pytest.raises(IdempotencyConflict):
        hold(engine, coffee, 81, key="cart-1")
