"""Draws, envelopes and goals over HTTP: replies in the program's words, bad input as problems."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from kinloop.api import deps, routes
from kinloop.api import draws as draws_api
from kinloop.api import envelopes as envelopes_api
from kinloop.api import goals as goals_api
from tests.api.conftest import Api, assert_problem, build_api, event, row_counts
from tests.api.outlet_rows import PRIZES, draw_body
from tests.conftest import NOW


@pytest.fixture
def api(engine: Engine, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    for module in (deps, routes, draws_api, envelopes_api, goals_api):
        monkeypatch.setattr(module, "utcnow", lambda: NOW)
    for built in build_api(engine, db_url):
        built.post_event(event("seed-m1", "m1", 5000))  # 500 Beans
        built.post_event(event("seed-m2", "m2", 100))  # 10 Beans
        yield built


def post(api: Api, url: str, body: Any, kind: str = "admin", token: str | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else api.auth(kind)
    return api.client.post(url, json=body, headers=headers)


def test_create_enter_close_and_verify_a_draw(api: Api) -> None:
    r = post(api, "/v1/draws", draw_body("wheel"))
    assert r.status_code == 201, r.text
    draw = r.json()
    assert (draw["status"], draw["seed"], draw["cost_text"]) == ("open", None, "1 Beans")
    assert [p["probability"] for p in draw["prizes"]] == ["0.100000", "0.900000"]
    assert draw["expected_cost"]["text"] == "an entry pays out 0 Beans on average for 1 Beans"
    token = api.member_token("m1")
    entry = post(api, "/v1/draws/wheel/entries", {"member_id": "m1", "entry_key": "e1"}, token=token).json()
    assert entry["text"].startswith("paid 1 Beans; won ")
    assert entry["balance"] == 499
    # A member token enters for its own member only.
    r = post(api, "/v1/draws/wheel/entries", {"member_id": "m2", "entry_key": "e2"}, token=token)
    assert_problem(r, 404, "unknown_member")
    closed = post(api, "/v1/draws/wheel/close", None).json()
    assert closed["status"] == "closed"
    assert len(closed["seed"]) == 64
    record = api.client.get("/v1/draws/wheel/record", headers=api.auth("read")).json()
    assert [e["seq"] for e in record["entries"]] == [1]
    r = post(api, "/v1/draws/wheel/entries", {"member_id": "m1", "entry_key": "e3"}, token=token)
    assert_problem(r, 409, "closed")
    stats = api.client.get("/v1/program/draws", headers=api.auth("read")).json()
    assert (stats[0]["entries"], stats[0]["collected"]) == (1, 1)


@pytest.mark.parametrize(
    ("prizes", "extra", "detail"),
    [
        ([], {}, "prizes: a draw needs at least one prize"),
        (
            [{"key": "a", "name": "A", "kind": "nothing", "odds": "0.5"}],
            {},
            "prizes: the odds sum to 0.5, not 1 as declared",
        ),
        (PRIZES, {"odds_total": 100}, "prizes: the odds sum to 10, not 100 as declared"),
        ([{"key": "a", "name": "A", "kind": "points", "odds": 1, "amount": -5}], {}, "prizes[0].amount: must not"),
    ],
)
def test_bad_prize_pools_are_refused_with_reasons_and_write_nothing(
    api: Api, prizes: list[Any], extra: dict[str, Any], detail: str
) -> None:
    before = row_counts(api.engine)
    body = {**draw_body("bad"), "prizes": prizes, **extra}
    problem = assert_problem(post(api, "/v1/draws", body), 422, "invalid_prize_pool")
    assert detail in problem["detail"]
    assert row_counts(api.engine) == before


def test_envelopes_over_http(api: Api) -> None:
    r = post(api, "/v1/envelopes", {"from": "m1", "key": "gift", "amount": 100, "to": "m2"}, kind="ingest")
    assert r.status_code == 201, r.text
    assert (r.json()["fee"], r.json()["text"]) == (1, "100 Beans: 100 Beans claimed by 1 of 1")
    assert api.client.get("/v1/members/m2", headers=api.auth("read")).json()["balances"]["beans"] == 110
    bad = [
        ({"from": "m1", "key": "a", "amount": 1, "to": "m1"}, 422, "self_transfer"),
        ({"from": "m1", "key": "b", "amount": 1, "to": "m2", "currency": "stars"}, 422, "currency_not_transferable"),
        ({"from": "m1", "key": "c", "amount": 101, "to": "m2"}, 409, "limit_reached"),
        ({"from": "m1", "key": "d", "amount": 10}, 422, "invalid_input"),
        ({"from": "m1", "key": "has:colon", "amount": 1, "to": "m2"}, 422, "invalid_request"),
    ]
    before = row_counts(api.engine)
    for body, status, code in bad:
        assert_problem(post(api, "/v1/envelopes", body), status, code)
    assert row_counts(api.engine) == before
    r = post(api, "/v1/envelopes", {"from": "m1", "key": "grp", "amount": 30, "shares": 3, "split": "equal"})
    assert r.json()["status"] == "open"
    claim = post(api, "/v1/envelopes/grp/claims", {"member_id": "m2"}).json()
    assert (claim["amount"], claim["text"]) == (10, "you received 10 Beans")
    comp = post(api, "/v1/envelopes/compensations", {"member_id": "m2", "amount": 5, "reason": "late", "key": "c1"})
    assert (comp.status_code, comp.json()["kind"]) == (201, "compensation")
    stats = api.client.get("/v1/program/envelopes", headers=api.auth("read")).json()
    assert stats["group"]["beans"]["claim_rate"] == "0.3333"


def test_goals_over_http(api: Api) -> None:
    r = post(api, "/v1/goals", {"key": "tree", "name": "Plant a tree", "currency": "beans", "target": 50})
    assert r.status_code == 201, r.text
    token = api.member_token("m1")
    done = post(api, "/v1/goals/tree/donations", {"member_id": "m1", "amount": 80, "key": "k"}, token=token).json()
    assert (done["donated"], done["reached"], done["text"]) == (50, True, "you gave 50 Beans to Plant a tree")
    goal = api.client.get("/v1/goals/tree", headers=api.auth("read")).json()
    assert goal["milestones"][0]["donors"] == [{"member_id": "m1", "amount": 50}]
    assert_problem(
        post(api, "/v1/goals", {"key": "growth", "name": "G", "currency": "stars", "target": 5}), 422, "invalid_input"
    )


def test_a_draw_window_needs_time_zones_and_an_order(api: Api) -> None:
    before = row_counts(api.engine)
    naive = {**draw_body("naive"), "opens_at": "2026-01-01T00:00:00"}
    assert_problem(post(api, "/v1/draws", naive), 422, "invalid_request")
    backwards = {**draw_body("backwards"), "closes_at": "2025-01-01T00:00:00Z"}
    assert assert_problem(post(api, "/v1/draws", backwards), 422, "invalid_input")["field"] == "closes_at"
    assert row_counts(api.engine) == before


def test_a_member_token_sees_only_envelopes_it_takes_part_in(api: Api) -> None:
    post(api, "/v1/envelopes/compensations", {"member_id": "m2", "amount": 5, "reason": "late", "key": "c1"})
    post(api, "/v1/envelopes", {"from": "m2", "key": "grp", "amount": 3, "shares": 3})
    m1 = {"Authorization": f"Bearer {api.member_token('m1')}"}
    m2 = {"Authorization": f"Bearer {api.member_token('m2')}"}
    assert_problem(api.client.get("/v1/envelopes/compensation:c1", headers=m1), 404, "not_found")
    assert api.client.get("/v1/envelopes/compensation:c1", headers=m2).json()["reason"] == "late"
    assert api.client.get("/v1/envelopes/grp", headers=m1).json()["shares"] == 3
