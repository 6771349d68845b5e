"""Badges and tasks over HTTP: the event reply, the member view, and profile tasks on PUT."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine

from kinloop.api.app import create_app
from kinloop.services import keys
from tests.api.conftest import Api, TestClient, build_api, fixed_clock
from tests.badges.programs import event, load
from tests.conftest import NOW

__all__ = ["fixed_clock"]  # a fixture, used by name


@pytest.fixture
def api(engine: Engine, db_url: str, fixed_clock: None) -> Iterator[Api]:
    yield from build_api(engine, db_url)


@pytest.fixture
def forum_client(engine: Engine, db_url: str, fixed_clock: None) -> Iterator[tuple[TestClient, dict[str, str]]]:
    forum = load(engine)
    with engine.begin() as conn:
        key, _ = keys.create(conn, forum.program_id, "admin", name="forum admin", now=NOW)
    app = create_app(db_url)
    client = TestClient(app, raise_server_exceptions=False)
    try:
        yield client, {"Authorization": f"Bearer {key}"}
    finally:
        client.close()
        app.state.kinloop.engine.dispose()


def test_the_event_reply_and_the_member_view(forum_client: tuple[TestClient, dict[str, str]]) -> None:
    client, auth = forum_client
    body = {"events": [event(f"a{i}", "answer", f"2026-02-0{i + 1}T10:00:00+08:00") for i in range(2)]}
    r = client.post("/v1/events", json=body, headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["results"][1]["badges"] == [
        {"badge": "helpful", "level": "bronze", "text": "earned Helpful (Bronze)"}
    ]
    r = client.post("/v1/events", json=event("c1", "comment", "2026-03-01T18:00:00+08:00"), headers=auth)
    assert r.status_code == 200, r.text
    assert r.json()["badges"] == []
    assert r.json()["tasks"] == []
    r = client.get("/v1/members/m1", headers=auth)
    assert r.status_code == 200, r.text
    view = r.json()
    helpful = view["badges"][0]
    assert [e["name"] for e in helpful["earned"]] == ["Helpful (Bronze)"]
    assert helpful["next"]["text"] == "2/3 to Helpful (Silver)"
    assert helpful["next"]["reward"] == {"currency": "growth", "amount": 15, "text": "15 Growth"}
    # NOW is 20:00 on March 1st in Shanghai: the comment of 18:00 counts today.
    assert view["tasks"][0]["text"] == "Comment 3 times today: 1/3"
    assert view["tasks"][0]["reward"]["text"] == "5 C"


def test_put_completes_the_profile_task_once(api: Api) -> None:
    profile = {"display_name": "Ann", "birthday": "1990-05-01", "attributes": {"phone": "+33 6 00 00 00 00"}}
    r = api.client.put("/v1/members/m7", json={"display_name": "Ann"}, headers=api.auth("ingest"))
    assert r.status_code == 200, r.text
    assert r.json()["tasks"][0]["text"] == "Complete your profile: 1/3"
    assert r.json()["balances"]["beans"] == 0
    for _ in range(2):
        r = api.client.put("/v1/members/m7", json=profile, headers=api.auth("ingest"))
        assert r.status_code == 200, r.text
        assert r.json()["tasks"][0]["text"] == "Complete your profile: 3/3 (done)"
        assert r.json()["balances"]["beans"] == 5  # once, however often the profile is sent


def test_task_completions_for_the_operator(forum_client: tuple[TestClient, dict[str, str]]) -> None:
    client, auth = forum_client
    comments = [event(f"c{i}", "comment", f"2026-02-10T1{i}:00:00+08:00", member=f"m{i % 2}") for i in range(6)]
    assert client.post("/v1/events", json={"events": comments}, headers=auth).status_code == 200
    r = client.get("/v1/program/tasks/stats", headers=auth)
    assert r.status_code == 200, r.text
    assert r.json() == [
        {"task": "daily_comments", "name": "Comment 3 times today", "period": "d2026-02-10", "completions": 2}
    ]
    r = client.get("/v1/program/tasks/stats?task=nope", headers=auth)
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"
