"""The mall over HTTP: a redemption from catalogue to refund, holds, and bad input (4xx, nothing written)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from kinloop.api import mall as mall_api
from tests.api.conftest import Api, api, assert_problem, event, fixed_clock, row_counts
from tests.conftest import NOW

__all__ = ["api", "fixed_clock"]  # the API fixtures, shared with tests/api

MUG = {"name": "Mug", "currency": "beans", "price": 120, "stock": 1, "category": "merch"}


@pytest.fixture
def shop(api: Api) -> Api:
    api.post_event(event("seed-m1", "m1", 5000))  # 500 Beans, Gold
    api.post_event(event("seed-m2", "m2", 100))  # 10 Beans
    return api


def put(api: Api, key: str, body: dict[str, Any], status: int = 201) -> dict[str, Any]:
    r = api.client.put(f"/v1/rewards/{key}", json=body, headers=api.auth("admin"))
    assert r.status_code == status, r.text
    out: dict[str, Any] = r.json()
    return out


def test_from_the_catalogue_to_a_cancel(shop: Api) -> None:
    api = shop
    assert put(api, "mug", MUG)["text"] == "Mug: 120 Beans"
    promo = {"starts_at": NOW.isoformat(), "ends_at": (NOW + timedelta(days=1)).isoformat(), "price": 90}
    sale = put(api, "beans-bag", {"name": "Beans bag", "currency": "beans", "price": 150, "promos": [promo]})
    assert sale["text"] == "Beans bag: 90 Beans (was 150 Beans, until 2026-03-02T12:00:00+00:00)"
    token = {"Authorization": f"Bearer {api.member_token('m1')}"}
    listed = api.client.get("/v1/rewards", headers=token).json()
    assert [(r["key"], r["price"], r["on_sale"], r["left"]) for r in listed] == [
        ("beans-bag", 90, True, None),
        ("mug", 120, False, 1),
    ]
    r = api.client.post(
        "/v1/orders", json={"member_id": "m1", "reward": "mug", "idempotency_key": "o1"}, headers=api.auth("ingest")
    )
    assert r.status_code == 201, r.text
    order = r.json()
    assert (order["status"], order["points"], order["text"]) == ("placed", 120, "1 × Mug for 120 Beans: placed")
    assert api.client.get("/v1/rewards/mug", headers=token).json()["text"] == "Mug: sold out"
    again = api.client.post(
        "/v1/orders", json={"member_id": "m1", "reward": "mug", "idempotency_key": "o1"}, headers=api.auth("ingest")
    )
    assert (again.status_code, again.json()["order_id"], again.json()["replayed"]) == (201, order["order_id"], True)
    body = assert_problem(
        api.client.post("/v1/orders", json={"member_id": "m2", "reward": "mug"}, headers=api.auth("ingest")),
        409,
        "sold_out",
    )
    assert body["detail"] == "Mug is sold out"
    assert api.client.get("/v1/members/m1", headers=token).json()["balances"]["beans"] == 380
    mine = api.client.get("/v1/orders", headers=token).json()
    assert [o["order_id"] for o in mine["orders"]] == [order["order_id"]]
    assert_problem(api.client.get("/v1/orders?member_id=m2", headers=token), 404, "unknown_member")
    cancelled = api.client.post(
        f"/v1/orders/{order['order_id']}/cancel", json={"reason": "changed mind"}, headers=api.auth("ingest")
    )
    assert cancelled.json()["status"] == "cancelled"
    assert api.client.get("/v1/members/m1", headers=token).json()["balances"]["beans"] == 500
    refused = api.client.post(f"/v1/orders/{order['order_id']}/refund", headers=api.auth("ingest"))
    assert assert_problem(refused, 409, "illegal_transition")["detail"] == (
        "an order that is cancelled cannot be refunded (possible now: none: it is final)"
    )
    figures = api.client.get("/v1/program/redemptions", headers=api.auth("read")).json()
    assert [(r["key"], r["orders"], r["returned_orders"]) for r in figures["by_reward"]] == [("mug", 0, 1)]


def test_a_hold_captured_twice_and_one_that_timed_out(shop: Api, monkeypatch: pytest.MonkeyPatch) -> None:
    api = shop
    ingest = api.auth("ingest")
    r = api.client.post(
        "/v1/holds", json={"member_id": "m1", "currency": "beans", "amount": 100, "reference": "cart-1"}, headers=ingest
    )
    assert r.status_code == 201, r.text
    hold = r.json()
    assert (hold["status"], hold["text"]) == ("active", "100 Beans held")
    view = api.client.get("/v1/members/m1", headers=api.auth("read")).json()
    assert (view["balances"]["beans"], view["holds"]["held"]) == (400, {"beans": 100})
    first = api.client.post(f"/v1/holds/{hold['hold_id']}/capture", headers=ingest).json()
    second = api.client.post(f"/v1/holds/{hold['hold_id']}/capture", headers=ingest).json()
    assert (first["status"], first["replayed"], second["status"], second["replayed"]) == (
        "captured",
        False,
        "captured",
        True,
    )
    other = api.client.post(
        "/v1/holds", json={"member_id": "m1", "currency": "beans", "amount": 50, "timeout_seconds": 60}, headers=ingest
    ).json()
    monkeypatch.setattr(mall_api, "utcnow", lambda: NOW + timedelta(minutes=2))
    assert (
        api.client.get(f"/v1/holds/{other['hold_id']}", headers=ingest | api.auth("read")).json()["status"] == "expired"
    )
    late = api.client.post(f"/v1/holds/{other['hold_id']}/capture", headers=ingest)
    assert_problem(late, 409, "hold_expired")
    # The refusal committed the expiry: the 50 Beans are back.
    assert api.client.get("/v1/members/m1", headers=api.auth("read")).json()["balances"]["beans"] == 400


BAD: dict[str, tuple[str, str, dict[str, Any], int, str]] = {
    "negative price": ("PUT", "/v1/rewards/x", {"name": "X", "currency": "beans", "price": -1}, 422, "invalid_reward"),
    "growth currency": ("PUT", "/v1/rewards/x", {"name": "X", "currency": "stars", "price": 1}, 422, "invalid_reward"),
    "unknown tier": (
        "PUT",
        "/v1/rewards/x",
        {"name": "X", "currency": "beans", "price": 1, "tiers": ["platinum"]},
        422,
        "invalid_reward",
    ),
    "promo ends first": (
        "PUT",
        "/v1/rewards/x",
        {
            "name": "X",
            "currency": "beans",
            "price": 5,
            "promos": [{"starts_at": "2026-03-02T00:00:00Z", "ends_at": "2026-03-01T00:00:00Z", "price": 1}],
        },
        422,
        "invalid_reward",
    ),
    "unknown reward": ("POST", "/v1/orders", {"member_id": "m1", "reward": "nothing"}, 404, "unknown_reward"),
    "zero quantity": (
        "POST",
        "/v1/orders",
        {"member_id": "m1", "reward": "mug", "quantity": 0},
        422,
        "invalid_request",
    ),
    "hold of a growth currency": (
        "POST",
        "/v1/holds",
        {"member_id": "m1", "currency": "stars", "amount": 1},
        409,
        "currency_not_spendable",
    ),
    "hold of nothing": (
        "POST",
        "/v1/holds",
        {"member_id": "m1", "currency": "beans", "amount": 0},
        422,
        "invalid_amount",
    ),
    "hold too short": (
        "POST",
        "/v1/holds",
        {"member_id": "m1", "currency": "beans", "amount": 1, "timeout_seconds": 1},
        422,
        "invalid_request",
    ),
    "unknown action": ("POST", "/v1/orders/1/ship", {}, 422, "invalid_request"),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_input_is_refused_with_a_reason_and_writes_nothing(shop: Api, name: str) -> None:
    api = shop
    put(api, "mug", MUG)
    method, url, body, status, code = BAD[name]
    before = row_counts(api.engine)
    problem = assert_problem(api.client.request(method, url, json=body, headers=api.auth("admin")), status, code)
    assert problem["detail"]
    assert row_counts(api.engine) == before


def test_the_growth_currency_reason_is_spelled_out(shop: Api) -> None:
    r = shop.client.put(
        "/v1/rewards/x", json={"name": "X", "currency": "stars", "price": 1}, headers=shop.auth("admin")
    )
    body = assert_problem(r, 422, "invalid_reward")
    assert (body["field"], body["detail"]) == (
        "currency",
        "currency: Stars is a growth currency: it qualifies for tiers and is never spent",
    )


def test_expiring_within_n_days(shop: Api) -> None:
    api = shop
    r = api.client.get("/v1/members/m1/expiring?days=400", headers=api.auth("read"))
    assert r.json() == {
        "member_id": "m1",
        "days": 400,
        "expiring": [
            {"currency": "beans", "amount": 500, "on": "2027-02-10", "text": "500 Beans expire on 2027-02-10"}
        ],
    }
    assert api.client.get("/v1/members/m1/expiring?days=30", headers=api.auth("read")).json()["expiring"] == []
