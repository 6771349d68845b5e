"""The /v1/webhooks endpoints through the FastAPI test client, on every backend."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine

import kinloop.api.webhooks as webhooks_api
from kinloop.api.app import create_app
from kinloop.services import ingest, keys
from kinloop.services.programs import LoadedProgram
from kinloop.services.webhooks import Worker
from tests.conftest import NOW
from tests.webhooks.conftest import Clock, counts, load_tea, purchase

with warnings.catch_warnings():
    # Starlette's test client announces a future move to another HTTP library; not our concern.
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient

PROBLEM = "application/problem+json"


@dataclass
class Api:
    client: TestClient
    keys: dict[str, str]  # scope -> key, of the coffee program; "tea" -> an admin key of another

    def call(self, method: str, path: str, who: str = "admin", **kwargs: Any) -> httpx.Response:
        headers = {"authorization": f"Bearer {self.keys[who]}"} if who else {}
        return self.client.request(method, path, headers=headers, **kwargs)


@pytest.fixture
def api(db_url: str, engine: Engine, coffee: LoadedProgram, monkeypatch: pytest.MonkeyPatch) -> Iterator[Api]:
    monkeypatch.setattr(webhooks_api, "utcnow", lambda: NOW)
    tea = load_tea(engine)
    made = {}
    with engine.begin() as conn:
        for scope in ("admin", "ingest", "read"):
            made[scope], _ = keys.create(conn, coffee.program_id, scope, name=f"{scope} test key", now=NOW)
        made["tea"], _ = keys.create(conn, tea.program_id, "admin", name="tea admin", now=NOW)
    app = create_app(db_url)
    with TestClient(app) as client:
        yield Api(client, made)
    app.state.kinloop.engine.dispose()


def problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def create(api: Api, url: str = "https://example.com/hooks", kinds: tuple[str, ...] = ("award.created",)) -> Any:
    response = api.call("POST", "/v1/webhooks", json={"url": url, "kinds": list(kinds)})
    assert response.status_code == 201, response.text
    return response.json()


def test_a_description_is_kept(api: Api) -> None:
    body = {"url": "http://crm.internal:8080/kinloop?src=1", "kinds": ["points.expiring"], "description": "CRM ✉"}
    made = api.call("POST", "/v1/webhooks", json=body).json()
    assert (made["url"], made["kinds"], made["description"]) == (body["url"], ["points.expiring"], "CRM ✉")
    assert api.call("GET", f"/v1/webhooks/{made['id']}").json()["description"] == "CRM ✉"


def test_create_returns_the_secret_once(api: Api) -> None:
    made = create(api, kinds=("tier.changed", "award.created", "tier.changed"))
    secret = made.pop("secret")
    assert secret.startswith("whsec_")
    assert len(secret) > 40
    assert made == {
        "id": made["id"],
        "url": "https://example.com/hooks",
        "kinds": ["tier.changed", "award.created"],
        "description": None,
        "active": True,
        "created_at": NOW.isoformat(),
        "deactivated_at": None,
    }
    listed = api.call("GET", "/v1/webhooks")
    assert listed.status_code == 200
    assert listed.json() == [made]
    one = api.call("GET", f"/v1/webhooks/{made['id']}")
    assert one.json() == made
    assert secret not in listed.text + one.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "ftp://example.com/hooks", "kinds": ["award.created"]}, "url"),
        ({"url": "example.com/hooks", "kinds": ["award.created"]}, "url"),
        ({"url": "https:///hooks", "kinds": ["award.created"]}, "url"),
        ({"url": "https://example.com:99999/", "kinds": ["award.created"]}, "url"),
        ({"url": "https://exa mple.com/", "kinds": ["award.created"]}, "url"),
        ({"url": "https://exa\x00mple.com/", "kinds": ["award.created"]}, "url"),
    ],
)
def test_a_url_that_is_not_http_is_refused(api: Api, engine: Engine, body: dict[str, Any], field: str) -> None:
    before = counts(engine)
    got = problem(api.call("POST", "/v1/webhooks", json=body), 422, "invalid_input")
    assert got["field"] == field
    assert api.call("GET", "/v1/webhooks").json() == []
    assert counts(engine) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "https://example.com/", "kinds": ["order.shipped"]}, "kinds[0]"),
        ({"url": "https://example.com/", "kinds": []}, "kinds"),
        ({"url": "https://example.com/"}, "kinds"),
        ({"kinds": ["award.created"]}, "url"),
        ({"url": "https://example.com/", "kinds": ["award.created"], "secret": "mine"}, "secret"),
        ({"url": "https://example.com/", "kinds": ["award.created"], "description": "a\x00b"}, "description"),
        ({"url": "https://example.com/", "kinds": ["award.created"], "description": "x" * 201}, "description"),
    ],
)
def test_a_malformed_subscription_is_refused(api: Api, body: dict[str, Any], field: str) -> None:
    got = problem(api.call("POST", "/v1/webhooks", json=body), 422, "invalid_request")
    assert got["field"] == field
    assert api.call("GET", "/v1/webhooks").json() == []


@pytest.mark.parametrize("who", ["read", "ingest"])
def test_only_admin_keys_manage_webhooks(api: Api, who: str) -> None:
    made = create(api)
    path = f"/v1/webhooks/{made['id']}"
    problem(
        api.call("POST", "/v1/webhooks", who, json={"url": "https://x.example/", "kinds": ["tier.changed"]}),
        403,
        "forbidden",
    )
    problem(api.call("GET", "/v1/webhooks", who), 403, "forbidden")
    problem(api.call("GET", path, who), 403, "forbidden")
    problem(api.call("GET", f"{path}/deliveries", who), 403, "forbidden")
    problem(api.call("DELETE", path, who), 403, "forbidden")
    problem(api.call("GET", "/v1/webhooks", ""), 401, "unauthorized")
    assert api.call("GET", path).json()["active"] is True


def test_another_programs_webhooks_do_not_exist(api: Api) -> None:
    made = create(api)
    path = f"/v1/webhooks/{made['id']}"
    problem(api.call("GET", path, "tea"), 404, "unknown_webhook")
    problem(api.call("GET", f"{path}/deliveries", "tea"), 404, "unknown_webhook")
    problem(api.call("DELETE", path, "tea"), 404, "unknown_webhook")
    assert api.call("GET", "/v1/webhooks", "tea").json() == []
    assert api.call("GET", path).json()["active"] is True


@pytest.mark.parametrize("webhook_id", ["0", "-1", "abc", str(2**63), "1.5"])
def test_a_webhook_id_that_cannot_exist_is_a_4xx(api: Api, webhook_id: str) -> None:
    assert api.call("GET", f"/v1/webhooks/{webhook_id}").status_code == 422
    assert api.call("DELETE", f"/v1/webhooks/{webhook_id}").status_code == 422
    problem(api.call("GET", "/v1/webhooks/12345"), 404, "unknown_webhook")


def test_delete_deactivates_and_keeps_the_log(api: Api) -> None:
    made = create(api)
    made.pop("secret")
    gone = api.call("DELETE", f"/v1/webhooks/{made['id']}")
    assert gone.status_code == 200
    assert gone.json() == {**made, "active": False, "deactivated_at": NOW.isoformat()}
    assert api.call("DELETE", f"/v1/webhooks/{made['id']}").json() == gone.json()
    assert api.call("GET", "/v1/webhooks").json() == [gone.json()]
    log = api.call("GET", f"/v1/webhooks/{made['id']}/deliveries")
    assert log.json() == {"deliveries": [], "next_cursor": None}


def test_the_delivery_log_pages_through_every_attempt(api: Api, engine: Engine, coffee: LoadedProgram) -> None:
    made = create(api, url="http://receiver.test/hooks")
    with engine.begin() as conn:
        ingest.ingest(conn, coffee, [purchase(f"e{i}", member_id=f"m{i}") for i in range(1, 4)], now=NOW)
    answers = iter([500, 200, 200, 200])
    clock = Clock(NOW)
    transport = httpx.MockTransport(lambda request: httpx.Response(next(answers), text="no"))
    with Worker(engine, clock=clock, transport=transport, batch=1) as worker:
        worker.drain()  # e1 fails once; e2 and e3 are delivered
        clock.advance(10)
        worker.drain()  # e1 is delivered
    path = f"/v1/webhooks/{made['id']}/deliveries"

    first = api.call("GET", path, params={"limit": 2})
    assert first.status_code == 200, first.text
    page = first.json()
    assert [d["payload"]["event_id"] for d in page["deliveries"]] == ["e3", "e2"]
    assert page["next_cursor"] is not None
    rest = api.call("GET", path, params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert rest["next_cursor"] is None
    [e1] = rest["deliveries"]
    assert e1 == {
        "id": e1["id"],
        "message_id": e1["message_id"],
        "kind": "award.created",
        "status": "delivered",
        "attempts": 2,
        "next_attempt_at": None,
        "last_status_code": 200,
        "last_error": None,
        "delivered_at": (NOW.replace(second=10)).isoformat(),
        "created_at": NOW.isoformat(),
        "payload": e1["payload"],
        "log": [
            {
                "attempt": 1,
                "at": NOW.isoformat(),
                "status_code": 500,
                "error": "HTTP 500: no",
                "duration_ms": e1["log"][0]["duration_ms"],
            },
            {
                "attempt": 2,
                "at": NOW.replace(second=10).isoformat(),
                "status_code": 200,
                "error": None,
                "duration_ms": e1["log"][1]["duration_ms"],
            },
        ],
    }
    assert e1["message_id"].startswith("msg_")
    assert (e1["payload"]["member_id"], e1["payload"]["text"]) == ("m1", "2 ★, 12 Beans")
    delivered = api.call("GET", path, params={"status": "delivered"}).json()
    assert len(delivered["deliveries"]) == 3
    assert api.call("GET", path, params={"status": "failed"}).json() == {"deliveries": [], "next_cursor": None}


@pytest.mark.parametrize(
    "params",
    [{"cursor": "abc"}, {"cursor": "1" * 20}, {"limit": 0}, {"limit": 201}, {"status": "lost"}],
)
def test_bad_delivery_log_queries_are_4xx(api: Api, params: dict[str, Any]) -> None:
    made = create(api)
    problem(api.call("GET", f"/v1/webhooks/{made['id']}/deliveries", params=params), 422, "invalid_request")


def test_a_huge_cursor_is_just_past_the_end(api: Api) -> None:
    made = create(api)
    got = api.call("GET", f"/v1/webhooks/{made['id']}/deliveries", params={"cursor": "9" * 19})
    assert got.json() == {"deliveries": [], "next_cursor": None}
