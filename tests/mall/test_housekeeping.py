"""Housekeeping rounds (what `kinloop worker` runs every minute), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine

from kinloop.services import housekeeping
from kinloop.services.programs import LoadedProgram
from tests.conftest import NOW
from tests.mall.conftest import assert_verified, beans, earn
from tests.mall.test_holds import hold


def test_a_timed_out_hold_gives_its_points_back_once(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 100)
    hold(engine, coffee, 80)
    assert housekeeping.run_due(engine, now=NOW + timedelta(seconds=599)) == {}
    assert beans(engine, coffee, "m1") == 20
    done = housekeeping.run_due(engine, now=NOW + timedelta(seconds=600))
    assert done == {"coffee": {"holds_released": {"beans": 80}}}
    assert beans(engine, coffee, "m1") == 100
    assert housekeeping.run_due(engine, now=NOW + timedelta(seconds=601)) == {}
    assert beans(engine, coffee, "m1") == 100
    assert_verified(engine, coffee)


def test_lots_past_their_expiry_expire_in_a_round(engine: Engine, coffee: LoadedProgram) -> None:
    earn(engine, coffee, "m1", 30)
    later = NOW + timedelta(days=800)  # beans expire 12 months after the month they were earned in
    done = housekeeping.run_due(engine, now=later)
    assert done["coffee"]["lots_expired"] == {"beans": 30}
    assert beans(engine, coffee, "m1") == 0
    assert housekeeping.run_due(engine, now=later) == {}
    assert_verified(engine, coffee)
