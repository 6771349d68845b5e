"""Who may call what: every credential kind against every /v1 endpoint, with the exact status.

The endpoints are read from the app itself, so a new endpoint without a row here fails
`test_every_endpoint_has_a_row`. Keys see only their own program (another program's members
and events are 404, not 403); member tokens read their own member and nothing else.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, select

from kinloop.api import deps
from kinloop.store.tables import members
from tests.api import outlet_rows
from tests.api.conftest import PROBLEM, TEA_SOURCE, Api, assert_problem, build_api, event
from tests.conftest import EXAMPLES

COFFEE_SOURCE = (EXAMPLES / "coffee.yaml").read_text(encoding="utf-8")
UNAUTHENTICATED = ("none", "garbage", "revoked", "expired")
KINDS = (*UNAUTHENTICATED, "read", "ingest", "admin", "member", "other")
_fresh = itertools.count(1)

Request = tuple[str, str, Any]  # method, url, JSON body (None: no body)


@dataclass(frozen=True)
class Row:
    """How to call one endpoint, and the status each authenticated credential gets."""

    build: Callable[[Api, str], Request]
    read: int
    ingest: int
    admin: int
    member: int
    other: int  # an admin key of another program

    def expected(self, kind: str) -> int:
        return 401 if kind in UNAUTHENTICATED else int(getattr(self, kind))


def fixed(method: str, url: str, body: Any = None) -> Callable[[Api, str], Request]:
    return lambda _api, _kind: (method, url, body)


def new_event(api: Api, _kind: str) -> Request:
    """A fresh event of m1 to reverse (posted by the coffee admin)."""
    event_id = f"to-reverse-{next(_fresh)}"
    api.post_event(event(event_id, "m1", 100))
    return "POST", f"/v1/events/{event_id}/reversal", {"reason": "refund"}


def upload(_api: Api, kind: str) -> Request:
    """The caller's own program file, unchanged: a valid upload that adds no version."""
    return "POST", "/v1/program/versions", {"source": TEA_SOURCE if kind == "other" else COFFEE_SOURCE}


def new_webhook(api: Api, _kind: str) -> int:
    r = api.client.post(
        "/v1/webhooks", json={"url": "https://example.com/hook", "kinds": ["award.created"]}, headers=api.auth("admin")
    )
    assert r.status_code == 201, r.text
    webhook_id: int = r.json()["id"]
    return webhook_id


def webhook(method: str, suffix: str = "") -> Callable[[Api, str], Request]:
    return lambda api, kind: (method, f"/v1/webhooks/{new_webhook(api, kind)}{suffix}", None)


def ensure_reward(api: Api, key: str, **fields: Any) -> None:
    """A reward of the coffee program (price 1 Bean, unlimited), created or replaced by its admin."""
    body = {"name": key.title(), "currency": "beans", "price": 1, **fields}
    r = api.client.put(f"/v1/rewards/{key}", json=body, headers=api.auth("admin"))
    assert r.status_code in (200, 201), r.text


def new_order(api: Api) -> int:
    ensure_reward(api, "cheap")
    r = api.client.post("/v1/orders", json={"member_id": "m1", "reward": "cheap"}, headers=api.auth("admin"))
    assert r.status_code == 201, r.text
    order_id: int = r.json()["order_id"]
    return order_id


def new_hold(api: Api) -> int:
    body = {"member_id": "m1", "currency": "beans", "amount": 1}
    r = api.client.post("/v1/holds", json=body, headers=api.auth("admin"))
    assert r.status_code == 201, r.text
    hold_id: int = r.json()["hold_id"]
    return hold_id


def place_cheap(api: Api, _kind: str) -> Request:
    ensure_reward(api, "cheap")
    return "POST", "/v1/orders", {"member_id": "m1", "reward": "cheap"}


def upload_codes(api: Api, _kind: str) -> Request:
    ensure_reward(api, "voucher", kind="digital", uses_codes=True)
    return "POST", "/v1/rewards/voucher/codes", {"codes": [f"C{next(_fresh)}"]}


def reward_then(method: str, url: str, body: Any = None, **fields: Any) -> Callable[[Api, str], Request]:
    def build(api: Api, _kind: str) -> Request:
        ensure_reward(api, url.split("/")[3], **fields)
        return method, url, body

    return build


# Posting an event, PUT and adjustments create the member when it is new: a key of another
# program creates a member of its own program (m2 or m3 there), and never touches this
# program's. Nothing here creates an m1 in the other program, whose m1 must stay unknown.
ROWS: dict[tuple[str, str], Row] = {
    ("POST", "/v1/events"): Row(
        lambda _api, _kind: ("POST", "/v1/events", event(f"new-{next(_fresh)}", "m3", 100)),
        read=403,
        ingest=200,
        admin=200,
        member=403,
        other=200,
    ),
    ("GET", "/v1/events/{event_id}"): Row(
        fixed("GET", "/v1/events/seed-m1"), read=200, ingest=403, admin=200, member=200, other=404
    ),
    ("POST", "/v1/events/{event_id}/reversal"): Row(new_event, read=403, ingest=200, admin=200, member=403, other=404),
    ("GET", "/v1/members/{member_id}"): Row(
        fixed("GET", "/v1/members/m1"), read=200, ingest=403, admin=200, member=200, other=404
    ),
    ("PUT", "/v1/members/{member_id}"): Row(
        fixed("PUT", "/v1/members/m2", {"display_name": "Two"}), read=403, ingest=200, admin=200, member=403, other=200
    ),
    ("GET", "/v1/members/{member_id}/ledger"): Row(
        fixed("GET", "/v1/members/m1/ledger?limit=2"), read=200, ingest=403, admin=200, member=200, other=404
    ),
    ("POST", "/v1/members/{member_id}/adjustments"): Row(
        fixed("POST", "/v1/members/m2/adjustments", {"currency": "beans", "amount": 1, "reason": "goodwill"}),
        read=403,
        ingest=403,
        admin=200,
        member=403,
        other=200,
    ),
    ("POST", "/v1/members/{member_id}/spends"): Row(
        fixed("POST", "/v1/members/m1/spends", {"currency": "beans", "amount": 1, "reason": "cookie"}),
        read=403,
        ingest=200,
        admin=200,
        member=403,
        other=404,
    ),
    ("POST", "/v1/members/{member_id}/tokens"): Row(
        fixed("POST", "/v1/members/m1/tokens", {"ttl_seconds": 60}),
        read=403,
        ingest=200,
        admin=200,
        member=403,
        other=404,
    ),
    # Check-in creates the member it names, in the caller's own program.
    ("POST", "/v1/members/{member_id}/check-ins"): Row(
        fixed("POST", "/v1/members/m2/check-ins", {}), read=403, ingest=200, admin=200, member=403, other=200
    ),
    ("GET", "/v1/program/campaigns"): Row(
        fixed("GET", "/v1/program/campaigns"), read=200, ingest=403, admin=200, member=403, other=200
    ),
    ("POST", "/v1/members/{member_id}/tier-purchases"): Row(
        lambda _api, _kind: (
            "POST",
            "/v1/members/m2/tier-purchases",
            {"tier": "reserve", "idempotency_key": f"buy-{next(_fresh)}"},
        ),
        read=403,
        ingest=201,
        admin=201,
        member=403,
        other=201,
    ),
    ("PUT", "/v1/members/{member_id}/tier"): Row(
        fixed("PUT", "/v1/members/m2/tier", {"tier": "jade", "reason": "regular"}),
        read=403,
        ingest=403,
        admin=200,
        member=403,
        other=200,
    ),
    ("GET", "/v1/members/{member_id}/tier-history"): Row(
        fixed("GET", "/v1/members/m1/tier-history"), read=200, ingest=403, admin=200, member=200, other=404
    ),
    ("GET", "/v1/program/versions"): Row(
        fixed("GET", "/v1/program/versions"), read=200, ingest=403, admin=200, member=403, other=200
    ),
    ("POST", "/v1/program/versions"): Row(upload, read=403, ingest=403, admin=201, member=403, other=201),
    ("GET", "/v1/program/versions/{version}"): Row(
        fixed("GET", "/v1/program/versions/1"), read=200, ingest=403, admin=200, member=403, other=200
    ),
    ("GET", "/v1/program/versions/{a}/diff/{b}"): Row(
        fixed("GET", "/v1/program/versions/1/diff/1"), read=200, ingest=403, admin=200, member=403, other=200
    ),
    ("POST", "/v1/program/versions/{version}/activate"): Row(
        fixed("POST", "/v1/program/versions/1/activate"), read=403, ingest=403, admin=200, member=403, other=200
    ),
    ("GET", "/v1/program/tasks/stats"): Row(
        fixed("GET", "/v1/program/tasks/stats"), read=403, ingest=403, admin=200, member=403, other=200
    ),
    ("POST", "/v1/webhooks"): Row(
        fixed("POST", "/v1/webhooks", {"url": "https://example.com/hook", "kinds": ["tier.changed"]}),
        read=403,
        ingest=403,
        admin=201,
        member=403,
        other=201,
    ),
    ("GET", "/v1/webhooks"): Row(fixed("GET", "/v1/webhooks"), read=403, ingest=403, admin=200, member=403, other=200),
    ("GET", "/v1/webhooks/{webhook_id}"): Row(webhook("GET"), read=403, ingest=403, admin=200, member=403, other=404),
    ("DELETE", "/v1/webhooks/{webhook_id}"): Row(
        webhook("DELETE"), read=403, ingest=403, admin=200, member=403, other=404
    ),
    ("GET", "/v1/webhooks/{webhook_id}/deliveries"): Row(
        webhook("GET", "/deliveries"), read=403, ingest=403, admin=200, member=403, other=404
    ),
    ("POST", "/v1/members/{member_id}/privileges/{privilege_key}/uses"): Row(
        lambda _api, kind: (
            "POST",
            "/v1/members/m1/privileges/free_drink/uses",
            {"idempotency_key": f"matrix-{kind}-{next(_fresh)}"},
        ),
        read=403,
        ingest=200,
        admin=200,
        member=403,
        other=404,
    ),
    ("GET", "/v1/program/privileges/usage"): Row(
        fixed("GET", "/v1/program/privileges/usage"), read=200, ingest=403, admin=200, member=403, other=200
    ),
    ("GET", "/v1/leaderboards/{key}"): Row(
        fixed("GET", "/v1/leaderboards/monthly_stars?limit=3"), read=200, ingest=403, admin=200, member=200, other=200
    ),
    ("GET", "/v1/leaderboards/{key}/members/{member_id}"): Row(
        fixed("GET", "/v1/leaderboards/monthly_stars/members/m1"),
        read=200,
        ingest=403,
        admin=200,
        member=200,
        other=404,
    ),
    ("GET", "/v1/rewards"): Row(fixed("GET", "/v1/rewards"), read=200, ingest=403, admin=200, member=200, other=200),
    ("GET", "/v1/rewards/{reward_key}"): Row(
        reward_then("GET", "/v1/rewards/cheap"), read=200, ingest=403, admin=200, member=200, other=404
    ),
    ("PUT", "/v1/rewards/{reward_key}"): Row(
        lambda _api, _kind: (
            "PUT",
            f"/v1/rewards/r{next(_fresh)}",
            {"name": "Mug", "currency": "beans", "price": 1},
        ),
        read=403,
        ingest=403,
        admin=201,
        member=403,
        other=201,
    ),
    ("POST", "/v1/rewards/{reward_key}/codes"): Row(
        upload_codes,
        read=403,
        ingest=403,
        admin=200,
        member=403,
        other=404,
    ),
    ("POST", "/v1/orders"): Row(
        place_cheap,
        read=403,
        ingest=201,
        admin=201,
        member=403,
        other=404,
    ),
    ("GET", "/v1/orders"): Row(
        fixed("GET", "/v1/orders?limit=2"), read=200, ingest=403, admin=200, member=200, other=200
    ),
    ("GET", "/v1/orders/{order_id}"): Row(
        lambda api, _kind: ("GET", f"/v1/orders/{new_order(api)}", None),
        read=200,
        ingest=403,
        admin=200,
        member=200,
        other=404,
    ),
    ("POST", "/v1/orders/{order_id}/{action}"): Row(
        lambda api, _kind: ("POST", f"/v1/orders/{new_order(api)}/cancel", {"reason": "changed mind"}),
        read=403,
        ingest=200,
        admin=200,
        member=403,
        other=404,
    ),
    ("POST", "/v1/holds"): Row(
        fixed("POST", "/v1/holds", {"member_id": "m1", "currency": "beans", "amount": 1}),
        read=403,
        ingest=201,
        admin=201,
        member=403,
        other=404,
    ),
    ("GET", "/v1/holds/{hold_id}"): Row(
        lambda api, _kind: ("GET", f"/v1/holds/{new_hold(api)}", None),
        read=200,
        ingest=403,
        admin=200,
        member=200,
        other=404,
    ),
    ("POST", "/v1/holds/{hold_id}/capture"): Row(
        lambda api, _kind: ("POST", f"/v1/holds/{new_hold(api)}/capture", None),
        read=403,
        ingest=200,
        admin=200,
        member=403,
        other=404,
    ),
    ("POST", "/v1/holds/{hold_id}/release"): Row(
        lambda api, _kind: ("POST", f"/v1/holds/{new_hold(api)}/release", None),
        read=403,
        ingest=200,
        admin=200,
        member=403,
        other=404,
    ),
    ("GET", "/v1/members/{member_id}/expiring"): Row(
        fixed("GET", "/v1/members/m1/expiring?days=400"), read=200, ingest=403, admin=200, member=200, other=404
    ),
    ("GET", "/v1/program/redemptions"): Row(
        fixed("GET", "/v1/program/redemptions"), read=200, ingest=403, admin=200, member=403, other=200
    ),
}

ROWS.update({k: Row(*v) for k, v in outlet_rows.rows().items()})


def v1_endpoints(app: FastAPI) -> set[tuple[str, str]]:
    """(method, path) of every route under /v1, however FastAPI nests included routers."""
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI >= 0.160 keeps routers nested
    except ImportError:  # pragma: no cover - older FastAPI lists the routes themselves
        routes: Any = app.routes
    else:
        routes = iter_route_contexts(app.routes)
    found = set()
    for route in routes:
        path, methods = getattr(route, "path", None), getattr(route, "methods", None)
        if path and methods and path.startswith("/v1/"):
            found |= {(m, path) for m in methods if m not in ("HEAD", "OPTIONS")}
    return found


@pytest.fixture
def matrix_api(api: Api) -> Api:
    """m1 with history and Beans to spend, m2 with an event, a token for m1."""
    api.post_event(event("seed-m1", "m1", 5000))
    api.post_event(event("seed-m2", "m2", 100))
    api.keys["member"] = api.member_token("m1")
    api.keys["other"] = api.keys["tea_admin"]
    return api


def headers_for(api: Api, kind: str) -> dict[str, str]:
    return {} if kind == "none" else api.auth(kind)


def test_every_endpoint_has_a_row(api: Api) -> None:
    app = api.client.app
    assert isinstance(app, FastAPI)
    endpoints = v1_endpoints(app)
    documented = {(m.upper(), p) for p, ops in app.openapi()["paths"].items() for m in ops}
    assert endpoints == documented
    assert endpoints == set(ROWS), "add a row to ROWS for each new endpoint (and drop removed ones)"


def test_the_authorisation_matrix(matrix_api: Api) -> None:
    api = matrix_api
    got: dict[tuple[str, str, str], int] = {}
    wanted: dict[tuple[str, str, str], int] = {}
    for (method, path), row in ROWS.items():
        for kind in KINDS:
            verb, url, body = row.build(api, kind)
            assert verb == method
            r = api.client.request(verb, url, json=body, headers=headers_for(api, kind))
            got[(method, path, kind)] = r.status_code
            wanted[(method, path, kind)] = row.expected(kind)
            if r.status_code >= 400:
                assert r.headers["content-type"] == PROBLEM, (method, path, kind)
                code = r.json()["code"]
                if r.status_code == 401:
                    assert code == "unauthorized"
                    assert r.headers["www-authenticate"] == 'Bearer realm="kinloop"'
                elif r.status_code == 403:
                    assert code == "forbidden"
                elif r.status_code == 404:
                    assert code == "not_found" or code.startswith("unknown_"), code
    wrong = {cell: (got[cell], wanted[cell]) for cell in wanted if got[cell] != wanted[cell]}
    assert wrong == {}, "cells as (got, expected)"
    # The other program's key created members of its own, never reaching this program's m1.
    assert_problem(api.client.get("/v1/members/m1", headers=api.auth("tea_read")), 404, "unknown_member")


def test_another_programs_writes_stay_in_that_program(matrix_api: Api) -> None:
    api = matrix_api
    other = api.auth("tea_admin")
    assert api.client.put("/v1/members/m2", json={"display_name": "Tea two"}, headers=other).status_code == 200
    r = api.client.post(
        "/v1/members/m2/adjustments", json={"currency": "beans", "amount": 7, "reason": "x"}, headers=other
    )
    assert (r.status_code, r.json()["balance"]) == (200, 7)
    r = api.client.post("/v1/events", json=event("seed-m1", "m1", 50), headers=other)
    assert r.json()["status"] == "accepted"  # event ids are per program: not a duplicate of coffee's
    coffee_m2 = api.client.get("/v1/members/m2", headers=api.auth("read")).json()
    assert (coffee_m2["profile"], coffee_m2["balances"]) == ({}, {"stars": 2, "beans": 10})
    tea_m2 = api.client.get("/v1/members/m2", headers=api.auth("tea_read")).json()
    assert (tea_m2["profile"], tea_m2["balances"]) == ({"display_name": "Tea two"}, {"stars": 0, "beans": 7})
    assert api.client.get("/v1/members/m1", headers=api.auth("read")).json()["balances"] == {"stars": 100, "beans": 500}
    with api.engine.connect() as conn:
        rows = conn.execute(select(members.c.program_id, members.c.member_id).order_by(members.c.id)).all()
    assert sorted((r.program_id, r.member_id) for r in rows) == sorted(
        [
            (api.coffee.program_id, "m1"),
            (api.coffee.program_id, "m2"),
            (api.tea.program_id, "m2"),
            (api.tea.program_id, "m1"),
        ]
    )


def test_a_member_token_sees_its_own_member_only(matrix_api: Api) -> None:
    api = matrix_api
    token = api.auth("member")
    assert api.client.get("/v1/members/m1", headers=token).json()["balances"] == {"stars": 100, "beans": 500}
    assert api.client.get("/v1/members/m1/ledger", headers=token).status_code == 200
    assert api.client.get("/v1/events/seed-m1", headers=token).json()["member_id"] == "m1"
    # Another member of the same program, its ledger and events: as if they did not exist.
    assert_problem(api.client.get("/v1/members/m2", headers=token), 404, "unknown_member")
    assert_problem(api.client.get("/v1/members/m2/ledger", headers=token), 404, "unknown_member")
    assert_problem(api.client.get("/v1/events/seed-m2", headers=token), 404, "unknown_member")
    assert_problem(api.client.get("/v1/members/nobody", headers=token), 404, "unknown_member")
    # Nothing but reading its member.
    body = assert_problem(api.client.get("/v1/program/versions", headers=token), 403, "forbidden")
    assert body["detail"] == "a member token may not read this"
    spend = {"currency": "beans", "amount": 1, "reason": "x"}
    assert_problem(api.client.post("/v1/members/m1/spends", json=spend, headers=token), 403, "forbidden")
    assert_problem(api.client.post("/v1/members/m1/tokens", json={}, headers=token), 403, "forbidden")


def test_refused_credentials_say_why(matrix_api: Api) -> None:
    api = matrix_api
    cases = {
        "": "send Authorization: Bearer <API key or member token>",
        "Bearer ": "send Authorization: Bearer <API key or member token>",
        f"Basic {api.keys['admin']}": "send Authorization: Bearer <API key or member token>",
        "Bearer kl_nothing_here": "unknown key",
        "Bearer not-a-key": "not a kinloop key",
        f"Bearer {api.keys['admin']}x": "unknown key",
        f"Bearer {api.keys['revoked']}": "this key has been revoked",
        f"Bearer {api.keys['expired']}": "member token has expired",
        "Bearer klm_e30.AAAA": "member token signature does not match",
        "Bearer klm_%%%": "malformed member token",
    }
    for header, detail in cases.items():
        r = api.client.get("/v1/members/m1", headers={"Authorization": header} if header else {})
        assert assert_problem(r, 401, "unauthorized")["detail"] == detail, header


class FakeClock:
    """Stands in for the `time` module in kinloop.api.deps: the rate limiter's clock."""

    now = 1000.0

    @classmethod
    def monotonic(cls) -> float:
        return cls.now


@pytest.fixture
def limited(engine: Engine, db_url: str, fixed_clock: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    """An app allowing 5 requests a second per key, with the limiter's clock in our hands."""
    monkeypatch.setattr(FakeClock, "now", 1000.0)
    monkeypatch.setattr(deps, "time", FakeClock)
    monkeypatch.setattr(deps, "limiter", deps.RateLimiter())
    yield from build_api(engine, db_url, rate_limit=5)


def test_rate_limit_per_key_with_retry_after(limited: Api) -> None:
    api = limited
    read = api.auth("read")
    statuses = [api.client.get("/v1/program/versions", headers=read).status_code for _ in range(5)]
    assert statuses == [200] * 5
    r = api.client.get("/v1/program/versions", headers=read)
    body = assert_problem(r, 429, "rate_limited")
    assert body["detail"] == "too many requests for this key"
    assert r.headers["retry-after"] == "1"
    # Another key has its own allowance.
    assert api.client.get("/v1/program/versions", headers=api.auth("admin")).status_code == 200
    # A fifth of a second later, one more request is allowed, and only one.
    FakeClock.now += 0.2
    assert api.client.get("/v1/program/versions", headers=read).status_code == 200
    assert api.client.get("/v1/program/versions", headers=read).status_code == 429
    # Much later the bucket is full again: 5 requests, not more.
    FakeClock.now += 10
    statuses = [api.client.get("/v1/program/versions", headers=read).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]


def test_member_tokens_are_rate_limited_too(limited: Api) -> None:
    api = limited
    api.post_event(event("e", "m1"))
    token = {"Authorization": f"Bearer {api.member_token('m1')}"}
    statuses = [api.client.get("/v1/members/m1", headers=token).status_code for _ in range(6)]
    assert statuses == [200] * 5 + [429]
