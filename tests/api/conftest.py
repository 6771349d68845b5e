"""Fixtures for the HTTP API tests: an app on each backend with two programs and a key of each kind.

The API reads the wall clock through `kinloop.clock.utcnow` in the routes, the event batcher and the
authentication dependency; these tests fix it at `NOW` so that replies are exact.
"""

from __future__ import annotations

import socket
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from kinloop.api import batching, deps, leaderboards, mall, privileges, routes
from kinloop.api.app import create_app
from kinloop.program.loader import parse_program
from kinloop.services import keys, programs
from kinloop.services.programs import LoadedProgram
from kinloop.store.tables import metadata
from tests.conftest import EXAMPLES, NOW, load_example

with warnings.catch_warnings():
    # Starlette's test client announces a future move to another HTTP library; not our concern.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from fastapi.testclient import TestClient

PROBLEM = "application/problem+json"
# A copy of the coffee program under another key: a second tenant whose requests are valid
# word for word, so that only the key decides what a caller sees.
TEA_SOURCE = (
    (EXAMPLES / "coffee.yaml")
    .read_text(encoding="utf-8")
    .replace("key: coffee\n", "key: tea\n", 1)
    .replace("name: Coffee Club\n", "name: Tea House\n", 1)
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def load_tea(engine: Engine) -> LoadedProgram:
    with engine.begin() as conn:
        return programs.load(conn, parse_program(TEA_SOURCE), TEA_SOURCE, now=NOW).loaded


def event(event_id: str, member_id: str = "m1", amount: Any = 250, **extra: Any) -> dict[str, Any]:
    """A purchase in the coffee program: 1 ★ per 50 and 1 Bean per 10 of `amount`."""
    return {
        "event_id": event_id,
        "member_id": member_id,
        "type": "purchase",
        "occurred_at": extra.pop("occurred_at", "2026-02-10T09:00:00Z"),
        "attributes": {"amount": amount, **extra},
    }


def row_counts(engine: Engine) -> dict[str, int]:
    """The number of rows in every table: what a refused request must leave unchanged."""
    with engine.connect() as conn:
        return {
            t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in metadata.tables.values()
        }


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """A problem response (RFC 9457) with this status and code; returns its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM, response.headers
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["type"] == f"https://kinloop.dev/problems/{code}"
    assert isinstance(body["detail"], str)
    assert body["detail"]
    return body


@dataclass
class Api:
    """The app, its client, and credentials of every kind."""

    client: TestClient
    engine: Engine
    coffee: LoadedProgram
    tea: LoadedProgram
    keys: dict[str, str] = field(default_factory=dict)

    def auth(self, kind: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[kind]}"}

    def post_event(self, body: dict[str, Any], kind: str = "admin") -> dict[str, Any]:
        r = self.client.post("/v1/events", json=body, headers=self.auth(kind))
        assert r.status_code == 200, r.text
        out: dict[str, Any] = r.json()
        return out

    def member_token(self, member_id: str, *, ttl: int = 900) -> str:
        r = self.client.post(f"/v1/members/{member_id}/tokens", json={"ttl_seconds": ttl}, headers=self.auth("admin"))
        assert r.status_code == 200, r.text
        token: str = r.json()["token"]
        return token


@pytest.fixture
def fixed_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(routes, "utcnow", lambda: NOW)
    monkeypatch.setattr(batching, "utcnow", lambda: NOW)
    monkeypatch.setattr(deps, "utcnow", lambda: NOW)
    monkeypatch.setattr(privileges, "utcnow", lambda: NOW)
    monkeypatch.setattr(leaderboards, "utcnow", lambda: NOW)
    monkeypatch.setattr(mall, "utcnow", lambda: NOW)


def build_api(engine: Engine, db_url: str, **app_options: Any) -> Iterator[Api]:
    coffee = load_example(engine, "coffee")
    tea = load_tea(engine)
    made: dict[str, str] = {}
    with engine.begin() as conn:
        for scope in keys.SCOPES:
            made[scope], _ = keys.create(conn, coffee.program_id, scope, name=f"{scope} key", now=NOW)
        made["revoked"], info = keys.create(conn, coffee.program_id, "admin", name="old admin", now=NOW)
        keys.revoke(conn, coffee.program_id, info.prefix, now=NOW)
        made["tea_admin"], _ = keys.create(conn, tea.program_id, "admin", name="tea admin", now=NOW)
        made["tea_read"], _ = keys.create(conn, tea.program_id, "read", name="tea read", now=NOW)
        secret = keys.token_secret(conn, NOW)
    # Signed with the right secret, for a real member, but an hour past its expiry.
    made["expired"], _ = keys.mint_token(
        secret, coffee.program_id, "m1", now=NOW - timedelta(hours=1), ttl=timedelta(minutes=5)
    )
    made["garbage"] = "kl_nothing_here"
    app = create_app(db_url, **app_options)
    client = TestClient(app, raise_server_exceptions=False)
    try:
        yield Api(client, engine, coffee, tea, made)
    finally:
        client.close()
        app.state.kinloop.engine.dispose()


@pytest.fixture
def api(engine: Engine, db_url: str, fixed_clock: None) -> Iterator[Api]:
    yield from build_api(engine, db_url)
