"""The check-in endpoint and the campaign listing over HTTP."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from kinloop.api import checkin as checkin_api
from kinloop.services import keys
from tests.api.conftest import Api, api, assert_problem, build_api, fixed_clock, row_counts  # noqa: F401  (fixtures)
from tests.conftest import NOW, load_example


@pytest.fixture
def ev_api(
    engine: Engine,
    db_url: str,
    fixed_clock: None,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Api]:
    monkeypatch.setattr(checkin_api, "utcnow", lambda: NOW)
    for web in build_api(engine, db_url):
        ev = load_example(engine, "ev_community")
        with engine.begin() as conn:
            web.keys["ev_ingest"], _ = keys.create(conn, ev.program_id, "ingest", name="ev ingest", now=NOW)
            web.keys["ev_read"], _ = keys.create(conn, ev.program_id, "read", name="ev read", now=NOW)
        yield web


def test_check_in_is_idempotent_per_member_and_local_day(ev_api: Api) -> None:
    web = ev_api
    first = web.client.post("/v1/members/m1/check-ins", json={}, headers=web.auth("ev_ingest"))
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["status"] == "accepted"
    assert body["event_id"] == "check-in:m1:2026-03-01"  # NOW is 20:00 in Shanghai on 1 March
    assert body["checkin"]["text"] == "checked in: day 1 in a row: 5 Points; 99 days to the 100-day bonus"
    again = web.client.post("/v1/members/m1/check-ins", headers=web.auth("ev_ingest"))
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "duplicate"
    assert again.json()["awards"] == body["awards"]
    view = web.client.get("/v1/members/m1", headers=web.auth("ev_read")).json()
    assert view["checkin"]["checked_in_today"] is True
    assert view["checkin"]["next_milestone"]["text"] == "99 days to the 100-day bonus (10 N)"
    assert view["campaigns"] is None


def test_a_refused_make_up_is_a_409_that_writes_nothing(ev_api: Api) -> None:
    web = ev_api
    web.client.post(
        "/v1/members/m1/check-ins", json={"occurred_at": "2026-02-27T02:00:00Z"}, headers=web.auth("ev_ingest")
    )
    before = row_counts(web.engine)
    r = web.client.post("/v1/members/m1/check-ins", json={"makeup_for": "2026-02-27"}, headers=web.auth("ev_ingest"))
    body = assert_problem(r, 409, "makeup_refused")
    assert "not a missed day" in body["detail"]
    assert row_counts(web.engine) == before
    ok = web.client.post("/v1/members/m1/check-ins", json={"makeup_for": "2026-02-28"}, headers=web.auth("ev_ingest"))
    assert ok.status_code == 200, ok.text
    assert ok.json()["checkin"]["streak"] == 2


@pytest.mark.parametrize(
    "body",
    [{"makeup_for": "2026-02-30"}, {"makeup_for": "yesterday"}, {"occurred_at": "noon"}, {"colour": "red"}],
)
def test_bad_check_in_requests_are_422(ev_api: Api, body: dict[str, str]) -> None:
    before = row_counts(ev_api.engine)
    r = ev_api.client.post("/v1/members/m1/check-ins", json=body, headers=ev_api.auth("ev_ingest"))
    assert r.status_code == 422, r.text
    assert row_counts(ev_api.engine) == before


def test_the_campaign_listing(api: Api) -> None:  # noqa: F811
    r = api.client.get("/v1/program/campaigns", headers=api.auth("read"))
    assert r.status_code == 200, r.text
    [member_day] = r.json()["campaigns"]
    assert (member_day["key"], member_day["schedule"]) == ("member_day", "every Wednesday")
    assert member_day["text"] == "Member day: ×2 every Wednesday"
