"""The store fixture works on every configured backend."""

from __future__ import annotations

from sqlalchemy import Engine

from kinloop.services import ingest, member_view
from kinloop.services.programs import LoadedProgram
from tests.conftest import NOW


def test_purchase_of_120_earns_2_stars_and_12_beans(engine: Engine, coffee: LoadedProgram) -> None:
    raw = {
        "event_id": "e1",
        "member_id": "m1",
        "type": "purchase",
        "occurred_at": "2026-01-05T10:00:00Z",
        "attributes": {"amount": 120},
    }
    with engine.begin() as conn:
        [result] = ingest.ingest(conn, coffee, [raw], now=NOW)
    assert result.status == "accepted"
    with engine.connect() as conn:
        view = member_view.show(conn, coffee, "m1", now=NOW)
    assert view.balances == {"stars": 2, "beans": 12}
    assert view.tier == {"key": "green", "name": "Green"}
