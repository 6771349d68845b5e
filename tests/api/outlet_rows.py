"""Rows of the authorisation matrix for the draws, envelopes and goals endpoints.

Each value is (build, read, ingest, admin, member, other), as `test_authorization.Row` takes
them. The builders create what the request needs (as the coffee admin) before the call."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

_fresh = itertools.count(1)
Request = tuple[str, str, Any]

PRIZES = [
    {"key": "mug", "name": "Mug", "kind": "reward", "odds": 1, "reward": "mug", "stock": 1000},
    {"key": "nothing", "name": "Thanks for playing", "kind": "nothing", "odds": 9},
]


def draw_body(key: str) -> dict[str, Any]:
    return {
        "key": key,
        "name": "Wheel",
        "currency": "beans",
        "cost": 1,
        "opens_at": "2026-01-01T00:00:00Z",
        "closes_at": "2099-01-01T00:00:00Z",
        "prizes": PRIZES,
    }


def _admin_post(api: Any, url: str, body: dict[str, Any], *, once: str | None = None) -> None:
    if once is not None and once in api.__dict__.setdefault("_made", set()):
        return
    r = api.client.post(url, json=body, headers=api.auth("admin"))
    assert r.status_code == 201, r.text
    if once is not None:
        api._made.add(once)


def wheel(api: Any) -> str:
    _admin_post(api, "/v1/draws", draw_body("wheel"), once="wheel")
    return "wheel"


def tree(api: Any) -> str:
    _admin_post(api, "/v1/goals", {"key": "tree", "name": "Tree", "currency": "beans", "target": 10**6}, once="tree")
    return "tree"


def group(api: Any) -> str:
    """A group envelope from m2 that m1 may claim (a repeat returns m1's claim)."""
    body = {"from": "m2", "key": "claim-me", "amount": 5, "shares": 5}
    _admin_post(api, "/v1/envelopes", body, once="claim-me")
    return "claim-me"


def on(method: str, url: Callable[[Any], str], body: Callable[[], Any] = lambda: None) -> Callable[[Any, str], Request]:
    return lambda api, _kind: (method, url(api), body())


def fresh_draw(api: Any) -> str:
    key = f"d{next(_fresh)}"
    _admin_post(api, "/v1/draws", draw_body(key))
    return key


def rows() -> dict[tuple[str, str], tuple[Any, ...]]:
    return {
        ("POST", "/v1/draws"): (
            on("POST", lambda _a: "/v1/draws", lambda: draw_body(f"new{next(_fresh)}")),
            403,
            403,
            201,
            403,
            201,
        ),
        ("GET", "/v1/draws"): (on("GET", lambda _a: "/v1/draws"), 200, 403, 200, 200, 200),
        ("GET", "/v1/draws/{draw_key}"): (on("GET", lambda a: f"/v1/draws/{wheel(a)}"), 200, 403, 200, 200, 404),
        ("PUT", "/v1/draws/{draw_key}/odds"): (
            on("PUT", lambda a: f"/v1/draws/{fresh_draw(a)}/odds", lambda: {"prizes": PRIZES}),
            403,
            403,
            200,
            403,
            404,
        ),
        ("POST", "/v1/draws/{draw_key}/entries"): (
            on(
                "POST",
                lambda a: f"/v1/draws/{wheel(a)}/entries",
                lambda: {"member_id": "m1", "entry_key": f"e{next(_fresh)}"},
            ),
            403,
            200,
            200,
            200,
            404,
        ),
        ("POST", "/v1/draws/{draw_key}/close"): (
            on("POST", lambda a: f"/v1/draws/{fresh_draw(a)}/close"),
            403,
            403,
            200,
            403,
            404,
        ),
        ("GET", "/v1/draws/{draw_key}/record"): (
            on("GET", lambda a: f"/v1/draws/{wheel(a)}/record"),
            200,
            403,
            200,
            200,
            404,
        ),
        ("GET", "/v1/program/draws"): (on("GET", lambda _a: "/v1/program/draws"), 200, 403, 200, 403, 200),
        ("POST", "/v1/envelopes"): (
            on(
                "POST",
                lambda _a: "/v1/envelopes",
                lambda: {"from": "m1", "key": f"k{next(_fresh)}", "amount": 1, "to": "m2"},
            ),
            403,
            201,
            201,
            201,
            404,
        ),
        ("GET", "/v1/envelopes/{envelope_key}"): (
            on("GET", lambda a: f"/v1/envelopes/{group(a)}"),
            200,
            403,
            200,
            200,
            404,
        ),
        ("POST", "/v1/envelopes/{envelope_key}/claims"): (
            on("POST", lambda a: f"/v1/envelopes/{group(a)}/claims", lambda: {"member_id": "m1"}),
            403,
            200,
            200,
            200,
            404,
        ),
        ("POST", "/v1/envelopes/compensations"): (
            on(
                "POST",
                lambda _a: "/v1/envelopes/compensations",
                lambda: {"member_id": "m1", "amount": 1, "reason": "late", "key": f"c{next(_fresh)}"},
            ),
            403,
            403,
            201,
            403,
            404,
        ),
        ("GET", "/v1/program/envelopes"): (on("GET", lambda _a: "/v1/program/envelopes"), 200, 403, 200, 403, 200),
        ("POST", "/v1/goals"): (
            on(
                "POST",
                lambda _a: "/v1/goals",
                lambda: {"key": f"g{next(_fresh)}", "name": "G", "currency": "beans", "target": 5},
            ),
            403,
            403,
            201,
            403,
            201,
        ),
        ("GET", "/v1/goals"): (on("GET", lambda _a: "/v1/goals"), 200, 403, 200, 200, 200),
        ("GET", "/v1/goals/{goal_key}"): (on("GET", lambda a: f"/v1/goals/{tree(a)}"), 200, 403, 200, 200, 404),
        ("POST", "/v1/goals/{goal_key}/donations"): (
            on(
                "POST",
                lambda a: f"/v1/goals/{tree(a)}/donations",
                lambda: {"member_id": "m1", "amount": 1, "key": f"d{next(_fresh)}"},
            ),
            403,
            200,
            200,
            200,
            404,
        ),
        ("GET", "/v1/program/goals"): (on("GET", lambda _a: "/v1/program/goals"), 200, 403, 200, 403, 200),
    }
